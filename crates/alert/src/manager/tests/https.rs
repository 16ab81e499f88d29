//! The webhook and Alertmanager notifiers over TLS: an in-process HTTPS receiver and a real
//! Alertmanager serving TLS, both with a throwaway CA that only `ca_file` makes trusted.

use std::path::PathBuf;

use stateful_redis_test_support::{Alertmanager, TestCa};
use tokio::io::AsyncWriteExt;

use super::http::{Request, read_request};
use super::*;
use crate::notify::Target;

/// An HTTPS/1.1 receiver on 127.0.0.1 with `ca`'s server certificate: answers 200 and
/// records each request. Returns its base URL.
async fn tls_receiver(ca: &TestCa) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&[b"http/1.1"]));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // A client that refuses the certificate ends the handshake: next connection.
            let Ok(mut stream) = acceptor.accept(stream).await else {
                continue;
            };
            let Some(request) = read_request(&mut stream).await else {
                continue;
            };
            seen.lock().unwrap().push(request);
            let reply = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (url, requests)
}

fn webhook(url: &str, ca_file: Option<PathBuf>) -> WebhookConfig {
    let mut webhook = WebhookConfig::new(format!("{url}/hook?token=s3cret"));
    webhook.retries = 0;
    webhook.ca_file = ca_file;
    webhook
}

#[tokio::test]
async fn an_https_webhook_gets_the_alert_when_its_ca_file_is_set() {
    let ca = TestCa::new();
    let (url, hook) = tls_receiver(&ca).await;
    let rig = Rig::new();
    let mut config = config(vec![rule("DeepQueue", "queue.depth", 100.0, 0)]);
    config.webhook = Some(webhook(&url, Some(ca.ca_path().to_owned())));
    let alerts = AlertManager::new(&config).unwrap();
    rig.set(|g| g.queue_depth = 150);
    assert_eq!(rig.at(&alerts, 0).len(), 1);
    alerts.shutdown(Duration::from_secs(10)).await;
    let stats = alerts.stats();
    assert_eq!(stats.notification_failures, 0, "{stats:?}");
    let hook = hook.lock().unwrap().clone();
    assert_eq!(hook.len(), 1, "{hook:?}");
    assert_eq!(hook[0].path, "/hook?token=s3cret");
    assert_eq!(hook[0].body["alert"]["name"], "DeepQueue");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_failure_that_names_the_setting() {
    let ca = TestCa::new();
    let (url, hook) = tls_receiver(&ca).await;
    // Without the CA file the system's roots apply, and they do not hold the test CA.
    let target = Target::webhook(&webhook(&url, None)).unwrap();
    let err = target.post(&serde_json::json!({})).await.unwrap_err();
    assert!(
        err.starts_with("TLS: certificate not trusted: set alerts.webhook.ca_file"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    // A CA file of another CA: not trusted either.
    let other = TestCa::new();
    let mut alertmanager = AlertmanagerConfig::new(&url);
    alertmanager.ca_file = Some(other.ca_path().to_owned());
    let target = Target::alertmanager(&alertmanager).unwrap();
    let err = target.post(&serde_json::json!([])).await.unwrap_err();
    assert!(
        err.starts_with("TLS: certificate not trusted: set alerts.alertmanager.ca_file"),
        "{err}"
    );
    // A plain HTTP server behind an https:// URL.
    let (plain, _) = plain_receiver().await;
    let target = Target::webhook(&webhook(&plain.replace("http://", "https://"), None)).unwrap();
    let err = target.post(&serde_json::json!({})).await.unwrap_err();
    assert!(err.starts_with("TLS: handshake failed"), "{err}");
    assert!(hook.lock().unwrap().is_empty());
}

/// A server that answers every connection with a plain HTTP response.
async fn plain_receiver() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            let _ = stream.shutdown().await;
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_bad_ca_file_is_a_config_error_naming_the_field_and_the_path() {
    let ca = TestCa::new();
    let dir = ca.ca_path().parent().unwrap().to_owned();
    let missing = dir.join("missing.pem");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "just text\n").unwrap();
    let key_only = ca.key_path().to_owned();
    for (path, reason) in [
        (&missing, "cannot read the CA file"),
        (&not_pem, "holds no PEM certificate"),
        (&key_only, "holds no PEM certificate"),
    ] {
        let mut config = config(Vec::new());
        config.webhook = Some(webhook("https://127.0.0.1:9", Some(path.clone())));
        let err = AlertManager::new(&config).unwrap_err();
        let Error::Config(e) = &err else {
            panic!("not a config error: {err}")
        };
        assert_eq!(e.field, "alerts.webhook.ca_file", "{err}");
        assert_eq!(e.value, path.display().to_string(), "{err}");
        assert!(e.reason.contains(reason), "{err}");
        let mut config = self::config(Vec::new());
        let mut alertmanager = AlertmanagerConfig::new("https://127.0.0.1:9");
        alertmanager.ca_file = Some(path.clone());
        config.alertmanager = Some(alertmanager);
        let err = AlertManager::new(&config).unwrap_err();
        assert!(
            matches!(&err, Error::Config(e) if e.field == "alerts.alertmanager.ca_file"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_real_alertmanager_over_tls_receives_the_alert() {
    let ca = TestCa::new();
    let am = Alertmanager::start_tls(&ca);
    assert!(am.url().starts_with("https://"));
    let rig = Rig::new();
    let mut config = config(vec![rule("DeepQueue", "queue.depth", 100.0, 0)]);
    config.labels.insert("service".into(), "tls-test".into());
    let mut alertmanager = AlertmanagerConfig::new(am.url());
    alertmanager.ca_file = Some(ca.ca_path().to_owned());
    config.alertmanager = Some(alertmanager);
    let alerts = AlertManager::new(&config).unwrap();
    rig.set(|g| g.queue_depth = 150);
    assert_eq!(rig.at(&alerts, 0).len(), 1);
    alerts.shutdown(Duration::from_secs(10)).await;
    let stats = alerts.stats();
    assert_eq!(stats.notification_failures, 0, "{stats:?}");
    let held: serde_json::Value = serde_json::from_str(&am.alerts_json()).unwrap();
    let ours: Vec<&serde_json::Value> = held
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["service"] == "tls-test")
        .collect();
    assert_eq!(ours.len(), 1, "{held}");
    assert_eq!(ours[0]["labels"]["alertname"], "DeepQueue");
}
