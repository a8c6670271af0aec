//! `nodeos install-disk --from https://…`: the answer file fetched over real TLS from a
//! server on loopback whose certificate a test CA signed. Trusted through `SSL_CERT_FILE`,
//! the file is read and checked, and the install stops at the first check that needs this
//! machine (the disk it names does not exist here), having written nothing. With the CA
//! not trusted, the fetch is refused with the certificate named.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cloudos_cluster::pki::ClusterCa;
use cloudos_cluster::tls::server_config_pem;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

const ANSWERS: &str =
    "mode = \"master\"\nhostname = \"fetched\"\ndisk = \"/dev/cloudos-test-none\"\nwipe = true\n";

/// An HTTPS server on loopback that answers every request with `ANSWERS`; returns its
/// address and the CA that signed its certificate, as PEM.
fn serve_answers() -> (SocketAddr, String) {
    let ca = ClusterCa::create("answers-test", OffsetDateTime::now_utc()).expect("CA");
    let serving = ca
        .issue_serving_cert(
            &[],
            &["127.0.0.1".parse().expect("ip")],
            time::Duration::hours(1),
            OffsetDateTime::now_utc(),
        )
        .expect("serving certificate");
    let config = server_config_pem(&serving.chain_pem, &serving.key_pem, None).expect("TLS");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = vec![0u8; 4096];
                    let _ = tls.read(&mut request).await;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/toml\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{ANSWERS}",
                        ANSWERS.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    (addr, ca.cert_pem().to_owned())
}

fn install_disk_from(url: &str, cert_file: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nodeos"))
        .args(["install-disk", "--from", url])
        .env("SSL_CERT_FILE", cert_file)
        .env_remove("SSL_CERT_DIR")
        .output()
        .expect("running nodeos install-disk");
    assert!(
        !out.status.success(),
        "the install cannot succeed here (no such disk)"
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn an_answer_file_is_fetched_over_https_from_a_trusted_server_only() {
    let (addr, ca_pem) = serve_answers();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("https://{addr}/install.toml");

    let trusted = dir.path().join("ca.pem");
    std::fs::write(&trusted, &ca_pem).expect("CA file");
    let output = install_disk_from(&url, &trusted);
    assert!(
        output.contains(&format!("answers from {url}")),
        "the answer file was not read: {output}"
    );
    assert!(
        output.contains("/dev/cloudos-test-none"),
        "the fetched answers were not checked against this machine: {output}"
    );

    // Another CA only: the server's certificate is not trusted.
    let other = ClusterCa::create("someone-else", OffsetDateTime::now_utc()).expect("CA");
    let untrusted = dir.path().join("other.pem");
    std::fs::write(&untrusted, other.cert_pem()).expect("CA file");
    let output = install_disk_from(&url, &untrusted);
    assert!(
        output.contains(&format!("cannot fetch {url}")) && output.contains("certificate"),
        "an untrusted server was not refused for its certificate: {output}"
    );
    assert!(!output.contains("answers from"), "{output}");
}
