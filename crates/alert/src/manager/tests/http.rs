//! The webhook and Alertmanager notifiers (the `http` feature) against in-process HTTP
//! receivers on 127.0.0.1.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use stateful_redis_core::Secret;

#[tokio::test]
async fn a_url_that_is_not_http_is_refused_without_showing_it() {
    let mut ftp = config(Vec::new());
    ftp.webhook = Some(WebhookConfig::new("ftp://hooks.test/alert?token=s3cret"));
    let err = AlertManager::new(&ftp).unwrap_err();
    assert!(
        matches!(&err, Error::Config(e) if e.field == "alerts.webhook.url"),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

/// One request an HTTP receiver got.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub(super) path: String,
    /// Names in lower case.
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: serde_json::Value,
}

/// An HTTP/1.1 receiver on 127.0.0.1: answers its requests, one connection at a time, with
/// `statuses` in order and then 200, and records them. Returns its base URL.
async fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    let mut statuses = statuses.into_iter();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let Some(request) = read_request(&mut stream).await else {
                continue;
            };
            seen.lock().unwrap().push(request);
            let status = statuses.next().unwrap_or(200);
            let reply = format!("HTTP/1.1 {status} Test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (url, requests)
}

pub(super) async fn read_request(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Request> {
    let mut data: Vec<u8> = Vec::new();
    let mut chunk = [0_u8; 4096];
    let end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let body_start = end + 4;
    while data.len() < body_start + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&data[body_start..body_start + length]).ok()?;
    Some(Request { path, headers, body })
}

#[tokio::test]
async fn webhook_and_alertmanager_get_their_payloads() {
    // The webhook fails its first post once.
    let (hook_url, hook) = receiver(vec![500]).await;
    let (am_url, am) = receiver(Vec::new()).await;
    let rig = Rig::new();
    let mut config = config(vec![rule("DeepQueue", "queue.depth", 100.0, 0)]);
    config.labels.insert("service".into(), "billing".into());
    let mut webhook = WebhookConfig::new(format!("{hook_url}/hook?token=s3cret"));
    webhook.headers.insert("X-Token".into(), Secret::new("t0ken"));
    config.webhook = Some(webhook);
    let mut alertmanager = AlertmanagerConfig::new(am_url);
    alertmanager.resend_interval = Duration::from_millis(200);
    config.alertmanager = Some(alertmanager);
    let alerts = AlertManager::new(&config).unwrap();
    let shown = format!("{alerts:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("t0ken") && shown.contains("webhook"),
        "{shown}"
    );

    rig.set(|g| g.queue_depth = 150);
    assert_eq!(rig.at(&alerts, 0).len(), 1);
    // Wait (bounded) for the webhook's retry and one re-post to the Alertmanager.
    for _ in 0..400 {
        if alerts.stats().refreshes >= 1 && hook.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    rig.set(|g| g.queue_depth = 0);
    assert_eq!(names(&rig.at(&alerts, 10)), [("DeepQueue", "firing", "resolved")]);
    alerts.shutdown(Duration::from_secs(10)).await;

    let stats = alerts.stats();
    assert!(stats.refreshes >= 1, "{stats:?}");
    assert_eq!((stats.notification_retries, stats.notification_failures), (1, 0));
    // Firing and resolved, to the log, the webhook and the Alertmanager.
    assert_eq!(stats.notifications_sent, 6, "{stats:?}");

    let hook = hook.lock().unwrap().clone();
    assert_eq!(hook.len(), 3, "{hook:?}");
    let firing = &hook[1];
    assert_eq!(firing.body, hook[0].body);
    assert_eq!(firing.path, "/hook?token=s3cret");
    assert!(firing.headers.contains(&("x-token".to_owned(), "t0ken".to_owned())));
    assert!(
        firing
            .headers
            .contains(&("content-type".to_owned(), "application/json".to_owned()))
    );
    let alert = &firing.body["alert"];
    assert_eq!(firing.body["version"], "1");
    assert_eq!(firing.body["status"], "firing");
    assert_eq!(alert["name"], "DeepQueue");
    assert_eq!(alert["severity"], "warning");
    assert_eq!(alert["metric"], "queue.depth");
    assert_eq!(alert["value"], 150.0);
    assert_eq!(alert["threshold"], 100.0);
    assert_eq!(alert["labels"]["service"], "billing");
    assert_eq!(alert["labels"]["alertname"], "DeepQueue");
    assert!(alert["startsAt"].is_string() && alert["endsAt"].is_null(), "{alert}");
    let resolved = &hook[2].body;
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["alert"]["startsAt"], alert["startsAt"]);
    assert!(resolved["alert"]["endsAt"].is_string(), "{resolved}");

    let am = am.lock().unwrap().clone();
    // Firing, at least one re-post, resolved.
    assert!(am.len() >= 3, "{am:?}");
    assert!(am.iter().all(|r| r.path == "/api/v2/alerts"), "{am:?}");
    let firing = &am[0].body[0];
    assert_eq!(firing["labels"]["alertname"], "DeepQueue");
    assert_eq!(firing["labels"]["severity"], "warning");
    assert_eq!(firing["labels"]["service"], "billing");
    assert_eq!(
        firing["annotations"]["description"],
        "queue.depth = 150 (threshold 100)"
    );
    assert!(firing["endsAt"].is_string(), "{firing}");
    assert_eq!(am[1].body[0]["labels"], firing["labels"]);
    let resolved = &am[am.len() - 1].body;
    assert_eq!(resolved.as_array().map(Vec::len), Some(1), "{resolved}");
    assert_eq!(resolved[0]["startsAt"], firing["startsAt"]);
    assert_eq!(resolved[0]["labels"], firing["labels"]);
}

#[tokio::test]
async fn a_down_webhook_counts_retries_and_one_failure() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let rig = Rig::new();
    let mut config = config(vec![rule("DeepQueue", "queue.depth", 100.0, 0)]);
    let mut webhook = WebhookConfig::new(format!("http://127.0.0.1:{port}/hook?token=s3cret"));
    webhook.retries = 2;
    config.webhook = Some(webhook);
    let alerts = AlertManager::new(&config).unwrap();
    rig.set(|g| g.queue_depth = 150);
    assert_eq!(rig.at(&alerts, 0).len(), 1);
    alerts.shutdown(Duration::from_secs(30)).await;
    let stats = alerts.stats();
    // Two retries, one failure; the log line was delivered.
    assert_eq!(
        (
            stats.notification_retries,
            stats.notification_failures,
            stats.notifications_sent
        ),
        (2, 1, 1)
    );
}
