//! SCIM 2.0 provisioning against a real CA over HTTPS, with the payloads Okta and Entra ID
//! send (shapes from their SCIM provisioning docs):
//!
//! - Okta: `POST /Users` with `name.givenName/familyName`, `emails`, `externalId`;
//!   deactivation `PATCH {"Operations":[{"op":"replace","value":{"active":false}}]}`;
//!   group members `{"op":"add","path":"members","value":[{"value":ID,"display":..}]}` and
//!   `{"op":"remove","path":"members[value eq \"ID\"]"}`.
//! - Entra ID: capitalised ops and string booleans,
//!   `{"op":"Replace","path":"active","value":"False"}`;
//!   `{"op":"Add","path":"members","value":[{"value":ID}]}`,
//!   `{"op":"Remove","path":"members","value":[{"value":ID}]}`; filters
//!   `userName eq "..."` / `displayName eq "..."`; `excludedAttributes=members`.
//!
//! A host enrolled with the CA syncs after each change: a deactivated user is gone from its
//! snapshot, a reactivated one comes back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use smith_testkit as support;

use reqwest::blocking::Client;
use serde_json::{json, Value};
use smith_api::endpoints;
use support::TestCa;

const USER_EXT: &str = "urn:ietf:params:scim:schemas:extension:smith:2.0:User";
const GROUP_EXT: &str = "urn:ietf:params:scim:schemas:extension:smith:2.0:Group";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct Scim<'a> {
    ca: &'a TestCa,
    http: Client,
    token: String,
}

impl<'a> Scim<'a> {
    fn new(ca: &'a TestCa) -> Scim<'a> {
        let token = ca
            .admin_ok(&["scim", "token", "--ttl", "1d"])
            .trim()
            .to_string();
        assert!(token.starts_with("smith_scim_"), "{token}");
        Scim {
            ca,
            http: ca.http(None),
            token,
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}/scim/v2{path}", self.ca.url);
        let mut req = self
            .http
            .request(method.parse().unwrap(), url)
            .header("accept", "application/scim+json");
        if let Some(t) = token
            .or(Some(self.token.as_str()))
            .filter(|t| !t.is_empty())
        {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        if status != 204 {
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            assert!(
                ct.starts_with("application/scim+json"),
                "{method} {path}: content-type {ct}"
            );
        }
        let text = r.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body, None);
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    fn err(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
        let (s, v) = self.call(method, path, body, None);
        assert_eq!(s, status, "{method} {path}: {v}");
        assert_eq!(v["schemas"], json!([ERROR]), "{v}");
        assert_eq!(v["status"], json!(status.to_string()), "{v}");
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
        v
    }
}

fn okta_user(name: &str, uid: Option<u64>) -> Value {
    let mut v = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Alice", "familyName": "Example"},
        "emails": [{"primary": true, "value": format!("{name}@example.com"), "type": "work"}],
        "displayName": "Alice Example",
        "locale": "en-US",
        "externalId": format!("00u{name}okta"),
        "groups": [],
        "password": "ignored-by-smith",
        "active": true
    });
    if let Some(u) = uid {
        v["schemas"].as_array_mut().unwrap().push(json!(USER_EXT));
        v[USER_EXT] = json!({"uidNumber": u});
    }
    v
}

fn entra_user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": "2f5ce8ae-5d1a-4d1c-9d1e-5e3c1a0b9f11",
        "userName": name,
        "active": true,
        "displayName": "Bob Builder",
        "emails": [{"primary": true, "type": "work", "value": format!("{name}@contoso.com")}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Bob Builder", "familyName": "Builder", "givenName": "Bob"},
        "roles": [],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "42"}
    })
}

/// A host enrolled with `tags`, syncing over mTLS.
struct Host {
    identity: smith_api::Identity,
}

impl Host {
    fn enroll(ca: &TestCa, name: &str, tags: &str) -> Host {
        Host {
            identity: ca.enroll_host(name, tags),
        }
    }

    /// The users of a full snapshot, with their uids.
    fn users(&self, ca: &TestCa) -> Vec<(String, u32)> {
        ca.sync_full(&self.identity)
            .users
            .iter()
            .map(|u| (u.name.to_string(), u.uid.get()))
            .collect()
    }
}

#[test]
fn users_are_created_validated_filtered_and_paged() {
    let ca = TestCa::start();
    let scim = Scim::new(&ca);

    // Okta-shaped create with a uid from the Smith extension.
    let (s, alice) = scim.call(
        "POST",
        "/Users",
        Some(okta_user("alice", Some(250_001))),
        None,
    );
    assert_eq!(s, 201, "{alice}");
    assert_eq!(alice["id"], "alice");
    assert_eq!(alice["userName"], "alice");
    assert_eq!(alice["active"], true);
    assert_eq!(alice["externalId"], "00ualiceokta");
    assert_eq!(alice["displayName"], "Alice Example");
    assert_eq!(alice[USER_EXT]["uidNumber"], 250_001);
    assert_eq!(alice["meta"]["location"], "/scim/v2/Users/alice");

    // Entra-shaped create: uid allocated from the CA's range.
    let bob = scim.ok("POST", "/Users", Some(entra_user("bob")));
    assert_eq!(bob["displayName"], "Bob Builder");
    let bob_uid = bob[USER_EXT]["uidNumber"].as_u64().unwrap();
    assert!((200_000..300_000).contains(&bob_uid), "{bob}");

    // The admin API sees the same users.
    let users: Vec<smith_api::UserInfo> =
        serde_json::from_str(&ca.admin_ok(&["user", "list", "--json"])).unwrap();
    let alice_info = users.iter().find(|u| u.name.as_str() == "alice").unwrap();
    assert_eq!(
        (alice_info.uid.get(), alice_info.gecos.as_str()),
        (250_001, "Alice Example")
    );

    // Refusals: invalid names, duplicates, a taken uid; nothing is created.
    for bad in ["Alice Smith", "alice@example.com", "root", ""] {
        let v = scim.err("POST", "/Users", Some(okta_user(bad, None)), 400);
        assert_eq!(v["scimType"], "invalidValue", "{bad}: {v}");
    }
    let v = scim.err("POST", "/Users", Some(okta_user("alice", None)), 409);
    assert_eq!(v["scimType"], "uniqueness");
    let v = scim.err(
        "POST",
        "/Users",
        Some(okta_user("carol", Some(250_001))),
        409,
    );
    assert!(v["detail"].as_str().unwrap().contains("250001"), "{v}");
    let v = scim.err("POST", "/Users", Some(json!(["not", "an", "object"])), 400);
    assert_eq!(v["scimType"], "invalidSyntax");

    // Filters and paging.
    let l = scim.ok("GET", "/Users?filter=userName%20eq%20%22alice%22", None);
    assert_eq!(l["totalResults"], 1);
    assert_eq!(l["Resources"][0]["id"], "alice");
    let l = scim.ok("GET", "/Users?filter=userName%20eq%20%22nobody%22", None);
    assert_eq!(
        (l["totalResults"].clone(), l["Resources"].clone()),
        (json!(0), json!([]))
    );
    let l = scim.ok(
        "GET",
        "/Users?filter=externalId%20eq%20%222f5ce8ae-5d1a-4d1c-9d1e-5e3c1a0b9f11%22",
        None,
    );
    assert_eq!(l["Resources"][0]["id"], "bob");
    let v = scim.err("GET", "/Users?filter=userName%20co%20%22a%22", None, 400);
    assert_eq!(v["scimType"], "invalidFilter");
    let l = scim.ok("GET", "/Users?startIndex=2&count=1", None);
    assert_eq!(
        (l["totalResults"].clone(), l["itemsPerPage"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(l["Resources"][0]["id"], "bob");

    // GET one, 404 in SCIM form.
    assert_eq!(scim.ok("GET", "/Users/bob", None)["userName"], "bob");
    scim.err("GET", "/Users/nobody", None, 404);

    // PUT: attributes change, renames and uid changes are refused.
    let mut put = okta_user("alice", Some(250_001));
    put["displayName"] = json!("Alice Cooper");
    put["externalId"] = json!("00u-new");
    let v = scim.ok("PUT", "/Users/alice", Some(put.clone()));
    assert_eq!(
        (v["displayName"].clone(), v["externalId"].clone()),
        (json!("Alice Cooper"), json!("00u-new"))
    );
    put["userName"] = json!("alicia");
    assert_eq!(
        scim.err("PUT", "/Users/alice", Some(put.clone()), 400)["scimType"],
        "mutability"
    );
    put["userName"] = json!("alice");
    put[USER_EXT] = json!({"uidNumber": 250_002});
    assert_eq!(
        scim.err("PUT", "/Users/alice", Some(put), 400)["scimType"],
        "mutability"
    );

    // Discovery documents.
    let spc = scim.ok("GET", "/ServiceProviderConfig", None);
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["bulk"]["supported"], false);
    assert_eq!(scim.ok("GET", "/ResourceTypes", None)["totalResults"], 2);
    assert_eq!(
        scim.ok("GET", "/ResourceTypes/User", None)["endpoint"],
        "/Users"
    );
    assert_eq!(scim.ok("GET", "/Schemas", None)["totalResults"], 4);
    assert_eq!(
        scim.ok("GET", &format!("/Schemas/{USER_EXT}"), None)["name"],
        "SmithUser"
    );

    // Only the SCIM token opens /scim/v2; the SCIM token opens nothing else.
    let (s, v) = scim.call("GET", "/Users", None, Some(""));
    assert_eq!((s, v["schemas"].clone()), (401, json!([ERROR])));
    let (s, _) = scim.call("GET", "/Users", None, Some(&ca.admin_token));
    assert_eq!(s, 403);
    let alice_token = ca.user_token("alice");
    let (s, _) = scim.call("GET", "/Users", None, Some(&alice_token));
    assert_eq!(s, 403);
    let r = ca
        .http(None)
        .get(format!("{}{}", ca.url, endpoints::ADMIN_USERS))
        .bearer_auth(&scim.token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[test]
fn groups_memberships_and_deactivation_reach_the_host() {
    let ca = TestCa::start();
    let scim = Scim::new(&ca);
    scim.ok("POST", "/Users", Some(okta_user("alice", Some(250_001))));
    scim.ok("POST", "/Users", Some(entra_user("bob")));

    // Okta-shaped group with a member and a gid from the extension.
    let g = scim.ok(
        "POST",
        "/Groups",
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group", GROUP_EXT],
            "displayName": "dev",
            "externalId": "00g-dev",
            "members": [{"value": "alice", "display": "alice"}],
            GROUP_EXT: {"gidNumber": 250_100}
        })),
    );
    assert_eq!(g["id"], "dev");
    assert_eq!(g[GROUP_EXT]["gidNumber"], 250_100);
    assert_eq!(g["members"][0]["value"], "alice");
    // Invalid group names and unknown members are refused.
    let v = scim.err(
        "POST",
        "/Groups",
        Some(json!({"displayName": "Engineering Staff"})),
        400,
    );
    assert_eq!(v["scimType"], "invalidValue");
    let v = scim.err(
        "POST",
        "/Groups",
        Some(json!({"displayName": "ops", "members": [{"value": "nobody"}]})),
        400,
    );
    assert!(v["detail"].as_str().unwrap().contains("nobody"), "{v}");
    assert_eq!(
        scim.ok("GET", "/Groups", None)["totalResults"],
        1,
        "nothing half-created"
    );

    ca.admin_ok(&[
        "grant",
        "add",
        "--group",
        "dev",
        "--tags",
        "env=dev",
        "--level",
        "ssh",
        "--max-ttl",
        "1h",
    ]);
    let host = Host::enroll(&ca, "db-1", "env=dev,role=db");
    assert_eq!(host.users(&ca), vec![("alice".to_string(), 250_001)]);

    // Entra adds bob; Okta removes him by filter; Entra removes alice, Okta adds her back.
    let patch = |ops: Value| json!({"schemas": [PATCH], "Operations": ops});
    scim.ok(
        "PATCH",
        "/Groups/dev",
        Some(patch(
            json!([{"op": "Add", "path": "members", "value": [{"value": "bob"}]}]),
        )),
    );
    let names = |h: &Host| h.users(&ca).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(&host), vec!["alice", "bob"]);
    scim.ok(
        "PATCH",
        "/Groups/dev",
        Some(patch(
            json!([{"op": "remove", "path": "members[value eq \"bob\"]"}]),
        )),
    );
    assert_eq!(names(&host), vec!["alice"]);
    scim.ok(
        "PATCH",
        "/Groups/dev",
        Some(patch(
            json!([{"op": "Remove", "path": "members", "value": [{"value": "alice"}]}]),
        )),
    );
    assert!(names(&host).is_empty());
    let g = scim.ok(
        "PATCH",
        "/Groups/dev",
        Some(patch(json!([{"op": "add", "path": "members", "value": [{"value": "alice", "display": "alice"}, {"value": "bob"}]}]))),
    );
    assert_eq!(g["members"].as_array().unwrap().len(), 2);
    assert_eq!(names(&host), vec!["alice", "bob"]);
    // Group filters, excludedAttributes, renames refused.
    let l = scim.ok(
        "GET",
        "/Groups?filter=displayName%20eq%20%22dev%22&excludedAttributes=members",
        None,
    );
    assert_eq!(l["totalResults"], 1);
    assert!(l["Resources"][0].get("members").is_none(), "{l}");
    let v = scim.err(
        "PATCH",
        "/Groups/dev",
        Some(patch(
            json!([{"op": "Replace", "path": "displayName", "value": "developers"}]),
        )),
        400,
    );
    assert_eq!(v["scimType"], "mutability");

    // Okta deactivation: alice leaves the host's snapshot.
    let u = scim.ok(
        "PATCH",
        "/Users/alice",
        Some(patch(
            json!([{"op": "replace", "value": {"active": false}}]),
        )),
    );
    assert_eq!(u["active"], false);
    assert_eq!(names(&host), vec!["bob"]);
    let minted = ca.admin(&["user", "token", "alice"]);
    assert!(!minted.status.success(), "a disabled user gets no token");
    // Entra reactivation ("True" as a string) brings her back; Entra deactivation removes her.
    scim.ok(
        "PATCH",
        "/Users/alice",
        Some(patch(
            json!([{"op": "Replace", "path": "active", "value": "True"}]),
        )),
    );
    assert_eq!(names(&host), vec!["alice", "bob"]);
    scim.ok(
        "PATCH",
        "/Users/alice",
        Some(patch(
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )),
    );
    assert_eq!(names(&host), vec!["bob"]);
    // Entra attribute updates it sends routinely are accepted (unknown ones ignored).
    let u = scim.ok(
        "PATCH",
        "/Users/bob",
        Some(patch(json!([
            {"op": "Replace", "path": "displayName", "value": "Robert Builder"},
            {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "rb@contoso.com"},
            {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "R&D"}
        ]))),
    );
    assert_eq!(u["displayName"], "Robert Builder");

    // DELETE a user: gone from SCIM, the admin list and the host.
    let (s, _) = scim.call("DELETE", "/Users/bob", None, None);
    assert_eq!(s, 204);
    scim.err("GET", "/Users/bob", None, 404);
    assert!(names(&host).is_empty());
    let users: Vec<smith_api::UserInfo> =
        serde_json::from_str(&ca.admin_ok(&["user", "list", "--json"])).unwrap();
    assert!(users.iter().all(|u| u.name.as_str() != "bob"));

    // DELETE the group: SCIM never deletes the admin's grants. The group is handed to
    // the admin without SCIM's members (access through it ends), its grant kept.
    let (s, _) = scim.call("DELETE", "/Groups/dev", None, None);
    assert_eq!(s, 204);
    let grants: Vec<smith_api::GrantInfo> =
        serde_json::from_str(&ca.admin_ok(&["grant", "list", "--json"])).unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert!(names(&host).is_empty());
    let groups: Vec<smith_api::GroupInfo> =
        serde_json::from_str(&ca.admin_ok(&["group", "list", "--json"])).unwrap();
    assert!(groups
        .iter()
        .any(|g| g.name.as_str() == "dev" && g.members.is_empty()));
    // It is the admin's now: SCIM can no longer change it.
    let v = scim.err(
        "PATCH",
        "/Groups/dev",
        Some(patch(
            json!([{"op": "add", "path": "members", "value": [{"value": "alice"}]}]),
        )),
        403,
    );
    assert_eq!(v["scimType"], "mutability");
}

#[test]
fn provisioning_survives_a_restart_and_deleted_names_come_back_with_new_ids() {
    let mut ca = TestCa::start();
    let bob_uid;
    let bob_token;
    {
        let scim = Scim::new(&ca);
        scim.ok("POST", "/Users", Some(okta_user("alice", Some(250_001))));
        bob_uid = scim.ok("POST", "/Users", Some(entra_user("bob")))[USER_EXT]["uidNumber"]
            .as_u64()
            .unwrap();
        scim.ok(
            "POST",
            "/Groups",
            Some(json!({"displayName": "ops", "members": [{"value": "alice"}], "externalId": "grp-ops"})),
        );
        scim.ok(
            "PATCH",
            "/Users/alice",
            Some(json!({"Operations": [{"op": "replace", "value": {"active": false}}]})),
        );
        bob_token = ca.user_token("bob");
        let (s, _) = scim.call("DELETE", "/Users/bob", None, None);
        assert_eq!(s, 204);
    }
    ca.restart();
    let scim = Scim::new(&ca);
    let a = scim.ok("GET", "/Users/alice", None);
    assert_eq!(
        (a["active"].clone(), a["externalId"].clone()),
        (json!(false), json!("00ualiceokta"))
    );
    let g = scim.ok("GET", "/Groups/ops", None);
    assert_eq!(
        (g["externalId"].clone(), g["members"][0]["value"].clone()),
        (json!("grp-ops"), json!("alice"))
    );
    scim.err("GET", "/Users/bob", None, 404);
    // A recycled name gets a new uid (the earlier bob's files on hosts are not the new
    // one's); SCIM cannot ask for the old one (only an admin may give it back).
    let v = scim.err(
        "POST",
        "/Users",
        Some({
            let mut u = entra_user("bob");
            u[USER_EXT] = json!({"uidNumber": bob_uid});
            u
        }),
        409,
    );
    assert!(v["detail"].as_str().unwrap().contains("recycled"), "{v}");
    let b = scim.ok("POST", "/Users", Some(entra_user("bob")));
    assert_ne!(b[USER_EXT]["uidNumber"].as_u64(), Some(bob_uid));
    assert_eq!(b["active"], true);
    // The token minted for the deleted bob does not work for the new one.
    ca.admin_ok(&["group", "add", "dev"]);
    ca.admin_ok(&["group", "add-member", "dev", "bob"]);
    ca.admin_ok(&[
        "grant",
        "add",
        "--group",
        "dev",
        "--tags",
        "env=dev",
        "--level",
        "ssh",
        "--max-ttl",
        "1h",
    ]);
    let key =
        ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let body = json!({"public_key": key.public_key().to_openssh().unwrap(), "scope": "env=dev", "ttl_secs": 600});
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::CERTS_USER))
        .bearer_auth(&bob_token)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "{:?}", r.text());
    let fresh = ca.user_token("bob");
    let r = ca
        .http(None)
        .post(format!("{}{}", ca.url, endpoints::CERTS_USER))
        .bearer_auth(&fresh)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text());
}
