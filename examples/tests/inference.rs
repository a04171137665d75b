//! `file-gateway` serving an InferencePool from YAML in front of simulated vLLM servers (real
//! processes' sockets on loopback): Pods become endpoints, the pool gets its status, requests are
//! parsed and routed by the picker, the endpoint that served is reported, malformed requests are
//! refused, and a Pod that stops being Ready stops getting requests.

mod support;

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};

use support::*;
use vllm_sim::{RunningSim, SimConfig, Simulator};

/// Two simulators on 127.0.0.1 and 127.0.0.2 at one port (the pool's target port).
async fn servers() -> (Vec<RunningSim>, u16) {
    for _ in 0..20 {
        let port = free_port();
        let mut out = Vec::new();
        for i in 1..=2u8 {
            let config = SimConfig {
                model: "base".into(),
                pod_name: Some(format!("vllm-{i}")),
                ..SimConfig::default()
            };
            let addr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, i), port));
            match Simulator::serve(config, addr).await {
                Ok(s) => out.push(s),
                Err(_) => break,
            }
        }
        if out.len() == 2 {
            return (out, port);
        }
        for s in out {
            s.shutdown().await;
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

fn config(port: u16, second_ready: bool) -> String {
    let pod = |i: u8, ready: bool| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: vllm-{i}, namespace: llm, labels: {{app: vllm}}}}\n\
             status:\n  podIP: 127.0.0.{i}\n  conditions:\n  - {{type: Ready, status: \"{}\"}}\n",
            if ready { "True" } else { "False" }
        )
    };
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: gw}}
spec: {{controllerName: gateway.pingora.rs/controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: llm}}
spec:
  gatewayClassName: gw
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llm, namespace: llm}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{group: inference.networking.k8s.io, kind: InferencePool, name: pool}}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: pool, namespace: llm}}
spec:
  selector: {{matchLabels: {{app: vllm}}}}
  targetPorts: [{{number: {port}}}]
---
apiVersion: llm-d.ai/v1alpha2
kind: InferenceObjective
metadata: {{name: batch, namespace: llm}}
spec: {{priority: -1, poolRef: {{name: pool}}}}
{}{}{}"#,
        pod(1, true),
        pod(2, second_ready),
        // Another pool's Pod: never an endpoint of this one.
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: other, namespace: llm, labels: {app: other}}\n\
         status:\n  podIP: 127.0.0.3\n  conditions:\n  - {type: Ready, status: \"True\"}\n",
    )
}

fn chat(text: &str) -> String {
    serde_json::json!({
        "model": "base",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 3,
    })
    .to_string()
}

/// The value of header `name` in a lower-cased response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

#[tokio::test]
async fn an_inference_pool_from_yaml_serves_chat_completions() {
    let (servers, port) = servers().await;
    let dir = TempDir::new("inference-pool-test");
    let file = dir.0.join("config").join("all.yaml");
    write(&file, &config(port, true));
    let status_file = dir.0.join("status.yaml");
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _gateway = file_gateway(
        &dir.0.join("config"),
        listener,
        [
            OsStr::new("--admin"),
            OsStr::new(&admin.to_string()),
            OsStr::new("--status-file"),
            status_file.as_os_str(),
        ],
    );
    let post = |body: String, headers: Vec<(&'static str, &'static str)>| async move {
        send(
            listener,
            "POST",
            "llm.example",
            "/v1/chat/completions",
            &[&[("content-type", "application/json")][..], &headers[..]].concat(),
            &body,
        )
        .await
    };
    eventually("the pool to serve", || async {
        matches!(post(chat("hi"), vec![]).await, Ok((200, _, _)))
    })
    .await;

    // Both Ready Pods serve; the gateway names the endpoint, the simulator its pod. Until both
    // servers' metrics are scraped the one with metrics wins every pick, so the requests are
    // spread over up to 10 s.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..400 {
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let (status, head, body) = post(chat(&format!("question {i}")), vec![])
            .await
            .expect("reply");
        assert_eq!(status, 200, "{body}");
        let served = header(&head, "x-gateway-destination-endpoint-served").expect("served header");
        let pod = header(&head, "x-inference-pod").expect("pod header");
        assert_eq!(
            served,
            format!("127.0.0.{}:{port}", &pod["vllm-".len()..]),
            "{head}"
        );
        seen.insert(pod.to_owned());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "only {seen:?} served");

    // The pool's status names our Gateway as its parent, accepted.
    eventually("the pool's status", || async {
        std::fs::read_to_string(&status_file).is_ok_and(|s| {
            s.split("\n---\n")
                .find(|d| d.contains("kind: InferencePool"))
                .is_some_and(|d| d.contains("parents:") && d.contains("reason: Accepted"))
        })
    })
    .await;

    // Malformed requests are refused by the gateway.
    let (status, _, _) = post("{not json".into(), vec![]).await.expect("reply");
    assert_eq!(status, 400);

    // vllm-2 stops being Ready: everything goes to vllm-1.
    write(&file, &config(port, false));
    eventually("vllm-2 to leave the pool", || async {
        let mut only_first = true;
        for i in 0..6 {
            match post(chat(&format!("after {i}")), vec![]).await {
                Ok((200, head, _)) => {
                    only_first &= header(&head, "x-inference-pod") == Some("vllm-1")
                }
                _ => only_first = false,
            }
        }
        only_first
    })
    .await;
    for s in servers {
        s.shutdown().await;
    }
}
