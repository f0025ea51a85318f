//! Issuance load generator: N threads, each with its own keep-alive HTTPS connection,
//! request certificates as fast as the CA answers and report throughput and latency.
//!
//! ```sh
//! cargo run --release -p smith-ca --example issue_load -- \
//!     URL FINGERPRINT USER_TOKEN [CONCURRENCY=16] [COUNT=5000] [SCOPE=env=dev]
//! ```
//! Every answer is a certificate whose decision the CA recorded durably before answering.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a measurement tool, not shipped

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: issue_load URL FINGERPRINT USER_TOKEN [CONCURRENCY] [COUNT] [SCOPE]");
        std::process::exit(2);
    }
    let url = args[1].clone();
    let fp = args[2].clone();
    let token = args[3].clone();
    let conc: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(16);
    let count: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(5000);
    let scope = args.get(6).cloned().unwrap_or_else(|| "env=dev".into());
    let key = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
        .expect("key");
    let public = key.public_key().to_openssh().expect("public key");
    let req = smith_api::CertRequest {
        public_key: public,
        scope: smith_proto::Tags::parse(&scope).expect("scope k=v,..."),
        ttl_secs: 600,
        reason: None,
        oidc_nonce: None,
    };
    let start = Instant::now();
    let threads: Vec<_> = (0..conc)
        .map(|i| {
            let (url, fp, token, req) = (url.clone(), fp.clone(), token.clone(), req.clone());
            let n = count / conc + usize::from(i < count % conc);
            std::thread::spawn(move || {
                let client = smith_api::Client::new(smith_api::ClientOptions {
                    token: Some(token),
                    timeout: Duration::from_secs(60),
                    ..smith_api::ClientOptions::new(url, smith_api::Trust::Fingerprint(fp))
                })
                .expect("client");
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    client.issue_cert(&req).expect("a certificate");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    let elapsed = start.elapsed();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "{} certificates, concurrency {conc}: {:.0}/s, p50 {:?}, p99 {:?}",
        lat.len(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        p(0.50),
        p(0.99)
    );
}
