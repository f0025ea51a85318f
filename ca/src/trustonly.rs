//! The set-up script for a host that only trusts the CA (no smith-hostd, no NSS or PAM
//! module): `smith-ca admin host trust-only` prints it, for cloud-init or an image build.
//!
//! Under it sshd admits a Smith certificate as one of the given local accounts only if
//! the certificate was issued under a grant that allows that account and whose selector
//! is among the host's declared tags: the principals file of each account lists
//! `smith-tags:<every subset of the tags>:<account>` (see `smith_proto::grants`). The KRL
//! of revoked certificates is fetched from the CA (over TLS checked against its root) at
//! set-up and every few minutes, and validated before it replaces the previous one.
//!
//! What it cannot do, and says so in the script: no live removal (a certificate stays
//! good there until it expires or reaches the KRL), no Smith accounts (only local ones),
//! no per-grant sudo rules, no session or sudo records, no check of the grant's group
//! membership after issuance.
//!
//! Must never: produce a script that writes anything but the files it names, or embeds
//! an unvalidated name or tag.

use smith_proto::grants::trust_only_principals;
use smith_proto::{Tags, UserName};

/// What the script is made from.
pub struct TrustOnly<'a> {
    pub tags: &'a Tags,
    /// Local accounts certificates may log in as.
    pub logins: &'a [UserName],
    /// OpenSSH lines of the user CA keys.
    pub user_ca_keys: &'a [String],
    /// The CA's URL and TLS root, for the KRL fetch (`None`: no KRL fetch).
    pub krl: Option<(&'a str, &'a str)>,
    /// How often the KRL is fetched, in minutes.
    pub krl_every_minutes: u32,
}

fn heredoc(path: &str, body: &str) -> String {
    format!("cat > {path} <<'SMITH_EOF'\n{body}SMITH_EOF\n")
}

/// Renders the script.
pub fn render(t: &TrustOnly<'_>) -> Result<String, String> {
    if t.logins.is_empty() {
        return Err("name at least one local account (--login deploy)".into());
    }
    if t.user_ca_keys.is_empty() {
        return Err("the CA published no user CA key".into());
    }
    let logins: Vec<&str> = t.logins.iter().map(|l| l.as_str()).collect();
    let tags = if t.tags.is_empty() {
        "(none: only grants on every host)".to_string()
    } else {
        t.tags.to_string()
    };
    let mut s = String::from("#!/bin/sh\n");
    s.push_str(&format!(
        "# Smith, trust-only host: written by `smith-ca admin host trust-only`.\n\
         # Tags: {tags}. Accounts: {}.\n\
         #\n\
         # sshd admits a Smith certificate as one of these local accounts only if it was\n\
         # issued under a grant that allows that account (--login) and whose host selector\n\
         # is among these tags. It cannot: remove access before a certificate expires\n\
         # (only the KRL, fetched every {} minutes, revokes), serve Smith users (no NSS:\n\
         # the accounts must exist here), apply per-grant sudo rules, record sessions or\n\
         # sudo, or notice that the person left the grant's group after issuance. Enroll\n\
         # the host with `smith-host activate` for all of that.\n",
        logins.join(", "),
        t.krl_every_minutes
    ));
    s.push_str("set -eu\numask 022\n");
    s.push_str("mkdir -p /etc/ssh/sshd_config.d /etc/ssh/smith_principals\n");
    s.push_str("chmod 0755 /etc/ssh/smith_principals\n");
    let mut keys = String::new();
    for k in t.user_ca_keys {
        if k.contains('\n') || k.contains("SMITH_EOF") {
            return Err("a user CA key line is malformed".into());
        }
        keys.push_str(k.trim());
        keys.push('\n');
    }
    s.push_str(&heredoc("/etc/ssh/smith_user_ca.pub", &keys));
    for l in &logins {
        let mut body = String::from("# Written by smith-ca admin host trust-only; do not edit.\n");
        for p in trust_only_principals(t.tags, l)? {
            body.push_str(&p);
            body.push('\n');
        }
        s.push_str(&heredoc(&format!("/etc/ssh/smith_principals/{l}"), &body));
    }
    s.push_str("[ -f /etc/ssh/smith_revoked.krl ] || : > /etc/ssh/smith_revoked.krl\n");
    if let Some((url, root_pem)) = t.krl {
        let url = url.trim_end_matches('/');
        let safe = |c: char| c.is_ascii_alphanumeric() || ":/.-_[]%".contains(c);
        if !url.chars().all(safe) {
            return Err(format!(
                "the CA URL '{}' has unexpected characters",
                url.escape_debug()
            ));
        }
        if root_pem.contains("SMITH_EOF") {
            return Err("the CA's TLS root is malformed".into());
        }
        s.push_str(&heredoc("/etc/ssh/smith_ca_root.pem", root_pem));
        let fetch = format!(
            "#!/bin/sh\n\
             # Fetches the Smith KRL of revoked user certificates; keeps the previous one\n\
             # on any error (an unreadable KRL would make sshd refuse every key).\n\
             set -u\n\
             tmp=$(mktemp /etc/ssh/.smith_revoked.krl.XXXXXX) || exit 1\n\
             if curl -fsS --max-time 20 --cacert /etc/ssh/smith_ca_root.pem -o \"$tmp\" {url}{path} \\\n\
             \x20  && {{ [ ! -s \"$tmp\" ] || [ \"$(head -c 6 \"$tmp\")\" = SSHKRL ]; }}; then\n\
             \x20 chmod 0644 \"$tmp\" && mv -f \"$tmp\" /etc/ssh/smith_revoked.krl\n\
             else\n\
             \x20 rm -f \"$tmp\"\n\
             \x20 echo \"smith: cannot fetch the KRL from {url}; keeping the previous one\" >&2\n\
             \x20 exit 1\n\
             fi\n",
            path = smith_api::endpoints::CA_USER_KRL
        );
        s.push_str(&heredoc("/usr/local/sbin/smith-fetch-krl", &fetch));
        s.push_str("chmod 0755 /usr/local/sbin/smith-fetch-krl\n");
        s.push_str("/usr/local/sbin/smith-fetch-krl || true\n");
        s.push_str("if [ -d /etc/cron.d ]; then\n");
        s.push_str(&format!(
            "  echo '*/{} * * * * root /usr/local/sbin/smith-fetch-krl' > /etc/cron.d/smith-krl\n",
            t.krl_every_minutes.clamp(1, 59)
        ));
        s.push_str("fi\n");
    }
    s.push_str(&heredoc(
        "/etc/ssh/sshd_config.d/50-smith-trust.conf",
        "# Smith, trust-only host (see the script that wrote it).\n\
         TrustedUserCAKeys /etc/ssh/smith_user_ca.pub\n\
         AuthorizedPrincipalsFile /etc/ssh/smith_principals/%u\n\
         RevokedKeys /etc/ssh/smith_revoked.krl\n",
    ));
    s.push_str("if command -v sshd >/dev/null 2>&1; then sshd -t; elif [ -x /usr/sbin/sshd ]; then /usr/sbin/sshd -t; fi\n");
    s.push_str(
        "echo 'Smith trust-only set-up written; reload sshd (systemctl reload ssh) to apply.'\n",
    );
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_lists_subsets_per_account_and_fetches_the_krl() {
        let tags = Tags::parse("env=prod,role=web").unwrap();
        let logins = [UserName::new("deploy").unwrap()];
        let keys = ["ecdsa-sha2-nistp256 AAAA smith-user-ca".to_string()];
        let s = render(&TrustOnly {
            tags: &tags,
            logins: &logins,
            user_ca_keys: &keys,
            krl: Some((
                "https://ca.example:8443/",
                "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n",
            )),
            krl_every_minutes: 5,
        })
        .unwrap();
        for want in [
            "smith-tags:env=prod,role=web:deploy\n",
            "smith-tags:env=prod:deploy\n",
            "smith-tags:*:deploy\n",
            "AuthorizedPrincipalsFile /etc/ssh/smith_principals/%u\n",
            "https://ca.example:8443/v1/ca/user-krl",
            "*/5 * * * * root /usr/local/sbin/smith-fetch-krl",
            "It cannot: remove access before a certificate expires",
        ] {
            assert!(s.contains(want), "{want} missing:\n{s}");
        }
        assert!(!s.contains("smith-tags:env=dev"));
        assert!(render(&TrustOnly {
            tags: &tags,
            logins: &[],
            user_ca_keys: &keys,
            krl: None,
            krl_every_minutes: 5,
        })
        .is_err());
        assert!(render(&TrustOnly {
            tags: &tags,
            logins: &logins,
            user_ca_keys: &keys,
            krl: Some(("https://ca;rm -rf /", "x")),
            krl_every_minutes: 5,
        })
        .is_err());
    }
}
