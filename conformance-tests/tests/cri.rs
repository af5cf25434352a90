//! The Kubernetes node path without a kubelet: what a kubelet does to a node is CRI
//! calls to containerd, and this test makes them. A private containerd 1.6 runs its CRI
//! plugin with the runtime handler of the shipped `config/engines/containerd-1.x.toml`
//! (`lwk-runc`, the handler `config/engines/runtimeclass.yaml` names), and a small CRI
//! client (k8s-cri over tonic) runs pods through it: RunPodSandbox (host network, so no
//! CNI), CreateContainer, StartContainer, logs, ContainerStatus, StopContainer,
//! StopPodSandbox, RemovePodSandbox.
//!
//! What it proves: a pod annotated `run.lwk.kernel: mckernel` runs its containers under
//! mcexec, its two containers share one McKernel boot, its sandbox (pause) container does
//! not touch the LWK although it carries the annotation too; a plain pod runs as under
//! runc; the pause image has no `Env`, as such images do; and after RemovePodSandbox
//! nothing is left: no task, container, shim, mount, lease or reservation. What it does
//! not: the kubelet itself, CNI networking, the API server's RuntimeClass admission.

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use lwk_conformance::containerd::{self, Containerd};
use lwk_conformance::*;
use serde_json::json;
use tonic::transport::Channel;

const TEST: &str = "cri_pods_on_lwk_runc";
const NS: &str = "k8s.io";
const IMAGE: &str = "lwk.test/busybox:1";
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);
/// CRI's NamespaceMode.
const POD: i32 = 0;
const CONTAINER: i32 = 1;
const NODE: i32 = 2;
/// CRI's ContainerState.
const CONTAINER_RUNNING: i32 = 1;
const CONTAINER_EXITED: i32 = 2;

/// The kubelet's side of the CRI, as much of it as a pod's life needs.
struct CriClient {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

impl CriClient {
    fn connect(sock: &Path) -> CriClient {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let endpoint = tonic::transport::Endpoint::from_shared(format!("unix://{}", s(sock)))
            .expect("CRI endpoint");
        let channel = rt
            .block_on(endpoint.connect())
            .unwrap_or_else(|e| panic!("connecting to CRI at {}: {e}", sock.display()));
        CriClient {
            rt,
            client: RuntimeServiceClient::new(channel),
        }
    }

    /// One RPC, bounded by [`CALL_TIMEOUT`].
    fn call<T, F>(
        &self,
        what: &str,
        rpc: impl FnOnce(RuntimeServiceClient<Channel>) -> F,
    ) -> Result<T, tonic::Status>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let fut = rpc(self.client.clone());
        match self
            .rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, fut).await })
        {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => panic!("CRI {what} did not answer within {CALL_TIMEOUT:?}"),
        }
    }

    fn ok<T, F>(
        &self,
        cd: &Containerd,
        what: &str,
        rpc: impl FnOnce(RuntimeServiceClient<Channel>) -> F,
    ) -> T
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(what, rpc).unwrap_or_else(|st| {
            panic!(
                "CRI {what} failed: {}\n--- containerd log\n{}",
                st.message(),
                cd.log()
            )
        })
    }

    fn run_pod(&self, cd: &Containerd, config: &cri::PodSandboxConfig, handler: &str) -> String {
        let req = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        self.ok(cd, "RunPodSandbox", |mut c| async move {
            c.run_pod_sandbox(req).await
        })
        .pod_sandbox_id
    }

    /// CreateContainer + StartContainer; the container's id.
    fn start_container(
        &self,
        cd: &Containerd,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> String {
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        };
        let id = self
            .ok(cd, "CreateContainer", |mut c| async move {
                c.create_container(req).await
            })
            .container_id;
        let req = cri::StartContainerRequest {
            container_id: id.clone(),
        };
        self.ok(cd, "StartContainer", |mut c| async move {
            c.start_container(req).await
        });
        id
    }

    fn status(&self, cd: &Containerd, id: &str) -> cri::ContainerStatus {
        let req = cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.ok(cd, "ContainerStatus", |mut c| async move {
            c.container_status(req).await
        })
        .status
        .expect("ContainerStatus without a status")
    }

    fn wait_exited(&self, cd: &Containerd, id: &str) -> cri::ContainerStatus {
        wait_for(WAIT, &format!("container {id} to exit"), || {
            let st = self.status(cd, id);
            (st.state == CONTAINER_EXITED).then_some(st)
        })
    }

    fn stop_container(&self, cd: &Containerd, id: &str) {
        let req = cri::StopContainerRequest {
            container_id: id.into(),
            timeout: 20,
        };
        self.ok(cd, "StopContainer", |mut c| async move {
            c.stop_container(req).await
        });
    }

    fn remove_container(&self, cd: &Containerd, id: &str) {
        let req = cri::RemoveContainerRequest {
            container_id: id.into(),
        };
        self.ok(cd, "RemoveContainer", |mut c| async move {
            c.remove_container(req).await
        });
    }

    /// StopPodSandbox, then RemovePodSandbox, as the kubelet ends a pod.
    fn end_pod(&self, cd: &Containerd, pod: &str) {
        let req = cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        };
        self.ok(cd, "StopPodSandbox", |mut c| async move {
            c.stop_pod_sandbox(req).await
        });
        let req = cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        };
        self.ok(cd, "RemovePodSandbox", |mut c| async move {
            c.remove_pod_sandbox(req).await
        });
    }

    /// What CRI still knows of: pod sandboxes and containers.
    fn listed(&self, cd: &Containerd) -> (usize, usize) {
        let pods = self
            .ok(cd, "ListPodSandbox", |mut c| async move {
                c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
                    .await
            })
            .items
            .len();
        let ctrs = self
            .ok(cd, "ListContainers", |mut c| async move {
                c.list_containers(cri::ListContainersRequest { filter: None })
                    .await
            })
            .containers
            .len();
        (pods, ctrs)
    }
}

/// A host-network pod as the kubelet describes it: no hostname (a host-network pod must
/// not set one), logs under `log_dir`.
fn pod_config(name: &str, log_dir: &Path, annotations: &[(&str, &str)]) -> cri::PodSandboxConfig {
    fs::create_dir_all(log_dir).expect("pod log dir");
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: s(log_dir),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        linux: Some(cri::LinuxPodSandboxConfig {
            // Under the suite's own cgroup, as the other tests' containers.
            cgroup_parent: "/lwk-conformance".into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: NODE,
        pid: CONTAINER,
        ipc: POD,
        ..Default::default()
    }
}

fn container_config(name: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The text of a CRI log file (`<time> stdout F <line>` per line), lines only.
fn log_lines(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The shipped runtime handler: its name (the one runtimeclass.yaml names too) and the
/// `plugins` table of containerd-1.x.toml.
fn shipped_handler() -> (String, toml::Table) {
    let dir = workspace_root().join("config/engines");
    let text = fs::read_to_string(dir.join("containerd-1.x.toml")).expect("containerd-1.x.toml");
    let cfg: toml::Table = toml::from_str(&text).expect("containerd-1.x.toml is TOML");
    assert_eq!(
        cfg["version"].as_integer(),
        Some(2),
        "containerd 1.x config version"
    );
    let plugins = cfg["plugins"].as_table().expect("plugins").clone();
    let runtimes = plugins["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
        .as_table()
        .expect("runtimes");
    assert_eq!(runtimes.len(), 1, "one runtime handler: {runtimes:?}");
    let (handler, rt) = runtimes.iter().next().unwrap();
    assert_eq!(rt["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
    assert_eq!(
        rt["pod_annotations"].as_array().map(|a| a.len()),
        Some(1),
        "pod_annotations"
    );
    assert_eq!(rt["pod_annotations"][0].as_str(), Some("run.lwk.*"));
    assert!(rt["options"]["BinaryName"].is_str(), "BinaryName");
    let rc = fs::read_to_string(dir.join("runtimeclass.yaml")).expect("runtimeclass.yaml");
    let rc_handler = rc
        .lines()
        .find_map(|l| l.strip_prefix("handler:"))
        .map(str::trim);
    assert_eq!(
        rc_handler,
        Some(handler.as_str()),
        "runtimeclass.yaml must name the handler containerd-1.x.toml configures"
    );
    (handler.clone(), plugins)
}

/// `<runtime> state ID` of a container the shim runs.
fn runtime_state(cd: &Containerd, w: &World, id: &str) -> serde_json::Value {
    let out = Command::new(runtime_bin())
        .arg("--root")
        .arg(cd.runtime_root.join(NS))
        .args(["state", id])
        .envs(w.env())
        .output()
        .expect("runtime state");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "state of {id} is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The pause image this containerd expects (its `sandbox_image`).
fn sandbox_image(containerd: &Path) -> String {
    let out = Command::new(containerd)
        .args(["config", "default"])
        .output()
        .expect("containerd config default");
    let cfg: toml::Table =
        toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("default config is TOML");
    cfg["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"]
        .as_str()
        .expect("sandbox_image")
        .to_string()
}

#[test]
fn cri_pods_on_lwk_runc() {
    let Some((containerd, ctr)) = containerd::tools(TEST, "cri") else {
        return;
    };
    let (handler, shipped) = shipped_handler();
    let pause = sandbox_image(&containerd);
    let (_node, w) = private_node();
    let setup_calls = w.calls();

    let cd = Containerd::start(
        &containerd,
        &ctr,
        |dir| {
            // This node's part, not the runtime's: the shipped handler as it is, with
            // the binary under test and a --root under the test's directory.
            let node: toml::Table = toml::from_str(&format!(
                r#"[plugins."io.containerd.grpc.v1.cri"]
# Without CAP_SYS_RESOURCE (as in this sandbox) no runtime can lower a sandbox's
# oom_score_adj, and every RunPodSandbox fails unless CRI leaves it alone.
restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".cni]
# Host-network pods only: no CNI is called; read no host CNI set-up either.
conf_dir = "{d}/cni"
bin_dir = "{d}/cni"
[plugins."io.containerd.grpc.v1.cri".containerd]
snapshotter = "native"
# The plugin refuses to load unless this names a configured runtime.
default_runtime_name = "{handler}"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}.options]
BinaryName = "{bin}"
Root = "{d}/runtime"
"#,
                d = dir.display(),
                bin = runtime_bin().display(),
            ))
            .expect("node config");
            let mut plugins = shipped;
            containerd::merge(&mut plugins, node["plugins"].as_table().unwrap().clone());
            plugins
        },
        &w.env(),
    );

    // The pause image has no Env, as pause images and `FROM scratch` builds do: its
    // process (/bin/sleep) is named by path and runs without PATH.
    cd.import_image(
        NS,
        &pause,
        json!({"Entrypoint": ["/bin/sleep", "infinity"]}),
    );
    cd.import_image(NS, IMAGE, containerd::with_path(json!({"Cmd": ["sh"]})));

    let client = CriClient::connect(&cd.sock);
    let v = wait_for(WAIT, "the CRI plugin to answer Version", || {
        client
            .call("Version", |mut c| async move {
                c.version(cri::VersionRequest {
                    version: "v1".into(),
                })
                .await
            })
            .ok()
    });
    assert_eq!(v.runtime_name, "containerd", "{v:?}");

    // A plain pod: output, exit code, no LWK.
    let logs = cd.path("pods/plain");
    let pod_cfg = pod_config("plain", &logs, &[]);
    let pod = client.run_pod(&cd, &pod_cfg, &handler);
    let bundle = runtime_state(&cd, &w, &pod)["bundle"]
        .as_str()
        .map(PathBuf::from)
        .expect("the sandbox's bundle");
    let spec: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).expect("sandbox spec"))
            .expect("sandbox spec is JSON");
    assert!(
        !spec["process"]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("PATH="))),
        "the sandbox was meant to run without PATH: {}",
        spec["process"]
    );
    let c = client.start_container(
        &cd,
        &pod,
        &pod_cfg,
        container_config("plain", "echo plain-$((40+2)); exit 3"),
    );
    let st = client.wait_exited(&cd, &c);
    assert_eq!(st.exit_code, 3, "ContainerStatus exit code: {st:?}");
    assert_eq!(log_lines(&logs.join("plain.log")), "plain-42");
    client.remove_container(&cd, &c);
    client.end_pod(&cd, &pod);
    assert_eq!(
        w.calls(),
        setup_calls,
        "a pod without an LWK called LWK tools"
    );

    if runtime_is_runc() {
        say("SKIPPED CRI pods on the simulated LWK: the runtime under test is runc, which has no LWK layer");
    } else {
        lwk_pod(&cd, &client, &handler, &w, &setup_calls);
    }

    assert_eq!(
        client.listed(&cd),
        (0, 0),
        "CRI still lists pods or containers"
    );
    assert_eq!(cd.leftovers(), Vec::<String>::new(), "left behind");
    w.assert_clean();
}

/// A pod annotated run.lwk.kernel=mckernel with two containers.
fn lwk_pod(cd: &Containerd, client: &CriClient, handler: &str, w: &World, setup_calls: &str) {
    let logs = cd.path("pods/lwk");
    let pod_cfg = pod_config("lwk", &logs, &[("run.lwk.kernel", "mckernel")]);
    let pod = client.run_pod(cd, &pod_cfg, handler);

    // The sandbox got the pod's annotation (pod_annotations passes it) and CRI's mark,
    // and the runtime kept it off the LWK: no LWK tool ran, no launcher runs it.
    let state = runtime_state(cd, w, &pod);
    assert_eq!(
        state["annotations"]["io.kubernetes.cri.container-type"], "sandbox",
        "{state}"
    );
    assert_eq!(
        state["annotations"]["run.lwk.kernel"], "mckernel",
        "{state}"
    );
    let pause_cmd = fs::read(format!("/proc/{}/cmdline", state["pid"])).unwrap_or_default();
    assert_eq!(
        String::from_utf8_lossy(&pause_cmd)
            .replace('\0', " ")
            .trim(),
        "/bin/sleep infinity",
        "the sandbox runs its own process, not a launcher"
    );
    assert_eq!(w.calls(), setup_calls, "the sandbox touched the LWK");

    // Two containers of the pod, both on the LWK at once: one boot.
    let script = "grep Cpus_allowed_list /proc/self/status; tr '\\0' ' ' < /proc/$PPID/cmdline; \
                  echo; trap 'exit 7' TERM; while true; do sleep 0.1; done";
    let ids: Vec<String> = ["one", "two"]
        .iter()
        .map(|n| client.start_container(cd, &pod, &pod_cfg, container_config(n, script)))
        .collect();
    for (id, name) in ids.iter().zip(["one", "two"]) {
        let log = logs.join(format!("{name}.log"));
        let text = wait_for(WAIT, &format!("{name}'s output"), || {
            let t = log_lines(&log);
            t.contains("mcexec").then_some(t)
        });
        assert!(
            text.contains("Cpus_allowed_list:\t1"),
            "{name} not on the LWK CPU: {text}"
        );
        assert_eq!(client.status(cd, id).state, CONTAINER_RUNNING);
    }
    assert_eq!(
        w.count("\t0 boot\t"),
        1,
        "two containers, one boot: {}",
        w.calls()
    );

    // StopContainer's SIGTERM reaches the workload under mcexec: the trap's exit code.
    for id in &ids {
        client.stop_container(cd, id);
        let st = client.wait_exited(cd, id);
        assert_eq!(
            st.exit_code, 7,
            "ContainerStatus after StopContainer: {st:?}"
        );
        client.remove_container(cd, id);
    }
    client.end_pod(cd, &pod);
    wait_for(WAIT, "McKernel's teardown after the pod's end", || {
        (w.count(" destroy ") == 1 && w.leases() == 0).then_some(())
    });
    w.assert_booted_and_torn_down("mckernel", 1);
}
