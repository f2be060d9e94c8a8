//! The admin listener's endpoints (`/healthz`, `/readyz`, `/metrics`) answer
//! GET and HEAD (the same status and headers, no body: what load balancer
//! and uptime probes send); other methods get 405.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer_get_and_head_and_refuse_other_methods() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(&fake.url(), "", ""));
    for path in ["/healthz", "/readyz", "/metrics"] {
        let url = format!("{}{path}", gw.admin_url());
        let get = client().get(&url).send().await.unwrap();
        assert_eq!(get.status(), 200, "GET {path}");
        let get_type = get.headers()["content-type"].clone();
        let body = get.bytes().await.unwrap();
        assert!(!body.is_empty(), "GET {path}: empty body");

        let head = client().head(&url).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(head.headers()["content-type"], get_type, "HEAD {path}");
        let length: usize = head.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(length > 0, "HEAD {path}: content-length {length}");
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "HEAD {path}: a body"
        );

        let post = client().post(&url).send().await.unwrap();
        assert_eq!(post.status(), 405, "POST {path}");
    }
}
