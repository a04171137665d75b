//! The inference example: an Inference Gateway on 127.0.0.1:8081 in front of four simulated vLLM
//! servers, with no cluster, no GPU and no set-up.
//!
//! ```text
//! cargo run -p examples --bin inference-gateway
//! ```
//!
//! It starts four `vllm-sim` servers (127.0.0.1 to 127.0.0.4, port 18000, the 8B-on-H100 latency
//! profile, the base model `meta-llama/Llama-3.1-8B-Instruct` and the LoRA adapter
//! `llama-tuned`), serves the Gateway, HTTPRoute, InferencePool, InferenceObjectives,
//! InferenceModelRewrite and Pods of `examples/inference.yaml` (bundled into the binary), and
//! prints curl commands: a chat completion, a streamed one, a LoRA adapter and a sheddable
//! request. Each response names the server that answered (`x-gateway-destination-endpoint-served`
//! and the simulator's `x-inference-pod`). Ctrl-C drains and stops it. docs/inference.md explains
//! the pieces and how to point the YAML at real vLLM servers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use examples::admin::{self, AdminState};
use examples::runner::{Input, Runner};
use gateway_core::Gateway;
use gateway_k8s::{Resources, TranslateOptions};
use vllm_sim::{Profile, SimConfig, Simulator};

const CONFIG: &str = include_str!("../../inference.yaml");

/// The simulated servers' port (the InferencePool's `targetPorts`).
const SERVER_PORT: u16 = 18000;

const TRY: &str = "\
The inference gateway listens on http://127.0.0.1:8081 (admin: http://127.0.0.1:9902/status). Try:

  # a chat completion; the response names the server that answered
  curl -si http://127.0.0.1:8081/v1/chat/completions -H 'content-type: application/json' \\
       -d '{\"model\": \"meta-llama/Llama-3.1-8B-Instruct\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}], \"max_tokens\": 20}'

  # the same, streamed (server-sent events)
  curl -sN http://127.0.0.1:8081/v1/chat/completions -H 'content-type: application/json' \\
       -d '{\"model\": \"meta-llama/Llama-3.1-8B-Instruct\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}], \"max_tokens\": 20, \"stream\": true}'

  # the LoRA adapter directly, and `llama`, which the InferenceModelRewrite sends 90/10 to the
  # base model and the adapter (the response still says `llama`)
  curl -s http://127.0.0.1:8081/v1/completions -H 'content-type: application/json' \\
       -d '{\"model\": \"llama-tuned\", \"prompt\": \"Say hi\", \"max_tokens\": 10}'
  curl -s http://127.0.0.1:8081/v1/completions -H 'content-type: application/json' \\
       -d '{\"model\": \"llama\", \"prompt\": \"Say hi\", \"max_tokens\": 10}'

  # a sheddable request (objective `batch`, priority -1): 429 while the pool is saturated
  curl -si http://127.0.0.1:8081/v1/completions -H 'content-type: application/json' \\
       -H 'x-llm-d-inference-objective: batch' \\
       -d '{\"model\": \"meta-llama/Llama-3.1-8B-Instruct\", \"prompt\": \"Summarise\", \"max_tokens\": 10}'
";

/// mimalloc instead of the system allocator, as the other example binaries.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    examples::init_logging();
    let mut servers = Vec::new();
    for i in 1..=4u8 {
        let mut config = SimConfig::from_profile(Profile::Llama8bH100);
        config.model = "meta-llama/Llama-3.1-8B-Instruct".into();
        config.lora_modules = vec!["llama-tuned".into()];
        config.pod_name = Some(format!("vllm-{i}"));
        config.pod_namespace = Some("default".into());
        let addr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, i), SERVER_PORT));
        match Simulator::serve(config, addr).await {
            Ok(server) => servers.push(server),
            Err(e) => {
                eprintln!("inference-gateway: cannot start the simulated server on {addr}: {e}");
                std::process::exit(1);
            }
        }
    }
    let gateway = Gateway::new(examples::filter_registry());
    examples::inference().install(&gateway);
    let state = Arc::new(AdminState::default());
    let admin_addr = "127.0.0.1:9902".parse().expect("a literal socket address");
    if let Err(e) = admin::serve(admin_addr, state.clone(), gateway.clone()).await {
        eprintln!("inference-gateway: cannot bind the admin endpoint {admin_addr}: {e}");
        std::process::exit(1);
    }
    let options = TranslateOptions {
        controller_name: examples::DEFAULT_CONTROLLER_NAME.to_owned(),
        port_map: Default::default(),
        address_pool: None,
        default_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    Runner::new(gateway.clone(), options, state.clone(), None)
        .with_filters(examples::filter_registry())
        .run(Input::Fixed(Box::new(Resources::parse_yaml(
            CONFIG,
            "inference.yaml",
        ))))
        .await;
    if gateway.bound().await.is_empty() {
        eprintln!(
            "inference-gateway: could not listen on 127.0.0.1:8081 (is something else using it?)"
        );
        std::process::exit(1);
    }
    println!("{TRY}");
    if let Err(e) = gateway_core::shutdown_signal().await {
        tracing::error!(error = %e, "signal handling failed");
    }
    gateway.shutdown(Duration::from_secs(10)).await;
    for server in servers {
        server.shutdown().await;
    }
}
