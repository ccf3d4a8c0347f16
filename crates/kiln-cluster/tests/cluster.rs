//! The public API end to end: spec files (both formats), plans, rendered seeds checked
//! by the real `cloud-init schema` and the CA hash checked with `openssl`.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_cluster::{
    ClusterSecrets, ClusterSpec, NodeInputs, Plan, PlanError, Role, dry_run, plan, render_node,
};
use kiln_model::Hardware;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/clusters")
}

fn spec(file: &str) -> ClusterSpec {
    let text = std::fs::read_to_string(examples().join(file)).unwrap();
    ClusterSpec::parse(&text, file).unwrap_or_else(|e| panic!("{file}:\n{e}"))
}

fn hardware() -> Vec<Hardware> {
    let csv = std::fs::read_to_string(examples().join("hardware.csv")).unwrap();
    kiln_model::csv::parse_hardware_csv("hardware.csv", &csv).unwrap()
}

/// `line:column` (1-based) of the first occurrence of `needle` in `text`.
fn loc(text: &str, needle: &str) -> String {
    for (i, line) in text.lines().enumerate() {
        if let Some(col) = line.find(needle) {
            return format!("{}:{}", i + 1, col + 1);
        }
    }
    panic!("{needle:?} is not in the text")
}

/// The warnings of a spec that parses, one a line.
fn warnings(text: &str) -> String {
    let parsed = ClusterSpec::parse_with_warnings(text, "cluster.yaml")
        .unwrap_or_else(|e| panic!("the spec should parse:\n{e}\n{text}"));
    let lines: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// The 1-based number of the line that is exactly `line`.
fn line_of(text: &str, line: &str) -> usize {
    text.lines()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no line {line:?}"))
        + 1
}

fn errors(text: &str) -> String {
    ClusterSpec::parse(text, "cluster.yaml")
        .expect_err("the spec should be refused")
        .to_string()
}

/// The user-data's write_files entry for `path`.
fn written_file(user_data: &str, path: &str) -> Option<String> {
    let doc: serde_json::Value = serde_saphyr::from_str(user_data).expect("user-data is YAML");
    doc["write_files"]
        .as_array()?
        .iter()
        .find(|f| f["path"] == path)
        .and_then(|f| f["content"].as_str().map(str::to_string))
}

#[test]
fn both_formats_give_the_same_spec_and_plan() {
    let hw = hardware();
    for name in ["single-node", "three-node", "ha"] {
        let eksa = spec(&format!("{name}.eksa.yaml"));
        let native = spec(&format!("{name}.kiln.yaml"));
        assert_eq!(eksa, native, "{name}");
        assert_eq!(
            plan(&eksa, &hw).unwrap(),
            plan(&native, &hw).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn plans_pick_by_label_in_hostname_order_and_leave_spares() {
    let mut hw = hardware();
    hw.reverse(); // input order must not matter
    let p = plan(&spec("ha.eksa.yaml"), &hw).unwrap();
    let roles: Vec<(&str, &Role)> = p
        .nodes
        .iter()
        .map(|n| (n.hostname.as_str(), &n.role))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("cp1", &Role::ControlPlane { first: true }),
            ("cp2", &Role::ControlPlane { first: false }),
            ("cp3", &Role::ControlPlane { first: false }),
            (
                "worker1",
                &Role::Worker {
                    group: "md-0".into()
                }
            ),
        ]
    );
    assert_eq!(p.spares, vec!["worker2", "worker3"]);
    assert!(p.kube_vip);

    let single = plan(&spec("single-node.kiln.yaml"), &hw).unwrap();
    assert_eq!(single.nodes.len(), 1);
    assert_eq!(single.spares.len(), 5);
}

#[test]
fn too_few_machines_fails_before_anything_with_counts_and_selector() {
    let text = std::fs::read_to_string(examples().join("three-node.kiln.yaml"))
        .unwrap()
        .replace("count: 2", "count: 4");
    let s = ClusterSpec::parse(&text, "three-node.kiln.yaml").unwrap();
    let e = plan(&s, &hardware()).unwrap_err();
    assert!(matches!(e, PlanError::NotEnoughMachines(_)));
    let msg = e.to_string();
    assert!(
        msg.contains("worker group md-0 needs 4 machines with labels type=worker, 3 match (worker1, worker2, worker3)"),
        "{msg}"
    );

    // Two roles wanting the same machines: the second sees them taken.
    let overlap = "kind: KilnCluster\nname: x\nkubernetesVersion: \"1.30\"\n\
                   controlPlane: {count: 3, endpoint: 10.77.0.90, selector: {type: cp}}\n\
                   workers: [{name: md-0, count: 1, selector: {type: cp}}]\n";
    let s = ClusterSpec::parse(overlap, "x.yaml").unwrap();
    let msg = plan(&s, &hardware()).unwrap_err().to_string();
    assert!(
        msg.contains("worker group md-0 needs 1 machine with labels type=cp, 0 match"),
        "{msg}"
    );
    assert!(
        msg.contains("3 more match but are already taken by an earlier role (cp1, cp2, cp3)"),
        "{msg}"
    );
}

#[test]
fn overwrite_always_turns_the_wrong_disk_guard_off() {
    let with = |extra: &str| {
        format!(
            "kind: KilnCluster\nname: x\nkubernetesVersion: \"1.30\"\n{extra}\
             controlPlane: {{count: 1, endpoint: 10.77.0.11, selector: {{type: cp}}}}\n"
        )
    };
    let parse = |t: &str| ClusterSpec::parse(t, "cluster.yaml").unwrap();
    assert!(!parse(&with("")).overwrite_always, "guarded by default");
    assert!(parse(&with("overwrite: always\n")).overwrite_always);
    assert!(!parse(&with("overwrite: never\n")).overwrite_always);
    let e = errors(&with("overwrite: sometimes\n"));
    assert!(
        e.contains("cluster.yaml:4:") && e.contains("`always`"),
        "{e}"
    );
}

#[test]
fn endpoint_checks() {
    let hw = hardware();
    let with_endpoint = |ep: &str, count: u32| {
        let text = format!(
            "kind: KilnCluster\nname: x\nkubernetesVersion: \"1.30\"\n\
             controlPlane: {{count: {count}, endpoint: {ep}, selector: {{type: cp}}}}\n"
        );
        plan(&ClusterSpec::parse(&text, "x.yaml").unwrap(), &hw)
    };
    // The single control plane's own address: no VIP needed.
    let p = with_endpoint("10.77.0.11", 1).unwrap();
    assert!(!p.kube_vip);
    // Another machine's address cannot be a VIP.
    let e = with_endpoint("10.77.0.21", 1).unwrap_err().to_string();
    assert!(
        e.contains("10.77.0.21 is the address of machine worker1"),
        "{e}"
    );
    let e = with_endpoint("10.77.0.11", 3).unwrap_err().to_string();
    assert!(e.contains("is the address of machine cp1"), "{e}");
    // kube-vip answers ARP only on the control planes' own network.
    let e = with_endpoint("10.78.0.90", 3).unwrap_err().to_string();
    assert!(e.contains("not in the subnet of control plane cp1"), "{e}");
}

#[test]
fn the_seed_example_as_published_is_refused_with_its_line() {
    // The EKS Anywhere design note's example, verbatim: `count: 1` is mis-indented.
    let seed = "apiVersion: anywhere.eks.amazonaws.com/v1alpha1\nkind: Cluster\nmetadata:\n  name: single-node\nspec:\n  controlPlaneConfiguration:\n  count: 1\n    endpoint:\n      host: \"10.80.8.90\"\n";
    let e = errors(seed);
    assert!(e.starts_with("cluster.yaml:8:13: invalid YAML"), "{e}");
}

#[test]
fn bottlerocket_is_named_as_unsupported() {
    let text = std::fs::read_to_string(examples().join("single-node.eksa.yaml"))
        .unwrap()
        .replace("osFamily: ubuntu", "osFamily: bottlerocket");
    let e = errors(&text);
    assert!(
        e.contains(&format!(
            "cluster.yaml:{}: TinkerbellMachineConfig[single-node-cp].spec.osFamily: bottlerocket is not supported",
            loc(&text, "bottlerocket")
        )),
        "{e}"
    );
}

#[test]
fn unknown_fields_and_other_mistakes_are_all_reported_with_lines() {
    let text = std::fs::read_to_string(examples().join("three-node.eksa.yaml"))
        .unwrap()
        .replace("    count: 2\n", "    count: 2\n    cuont: 3\n")
        .replace(
            "kubernetesVersion: \"1.31\"",
            "kubernetesVersion: \"1.31x\"",
        )
        .replace("cidrBlocks: [10.96.0.0/12]", "cidrBlocks: [10.96.0.1/12]")
        .replace(
            "  managementCluster:\n",
            "  proxyConfiguration: {httpProxy: http://proxy:3128}\n  managementCluster:\n",
        );
    let e = errors(&text);
    for expected in [
        format!(
            "cluster.yaml:{}: Cluster.spec.workerNodeGroupConfigurations[0].cuont: unknown field",
            loc(&text, "cuont")
        ),
        format!(
            "cluster.yaml:{}: Cluster.spec.kubernetesVersion: \"1.31x\" is not a Kubernetes version",
            loc(&text, "\"1.31x")
        ),
        format!(
            "cluster.yaml:{}: Cluster.spec.clusterNetwork.services.cidrBlocks: \"10.96.0.1/12\" has host bits set",
            loc(&text, "10.96.0.1/12")
        ),
        format!(
            "cluster.yaml:{}: Cluster.spec.proxyConfiguration: not supported",
            loc(&text, "{httpProxy")
        ),
    ] {
        assert!(e.contains(&expected), "missing {expected:?} in:\n{e}");
    }
    assert_eq!(e.lines().count(), 4, "{e}");
}

#[test]
fn references_kinds_and_values_kiln_cannot_honour() {
    let base = std::fs::read_to_string(examples().join("single-node.eksa.yaml")).unwrap();
    let renamed = base.replace("name: single-node-cp\nspec:", "name: other-cp\nspec:");
    let e = errors(&renamed);
    assert!(
        e.contains(&format!(
            "cluster.yaml:{}: Cluster.spec.controlPlaneConfiguration.machineGroupRef.name: no TinkerbellMachineConfig named \"single-node-cp\" in this file (there is: other-cp)",
            loc(&renamed, "single-node-cp")
        )),
        "{e}"
    );
    // The machine config nobody names is not an error (as in EKS Anywhere).
    assert_eq!(e.lines().count(), 1, "{e}");

    let e = errors(&format!(
        "{base}\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: t}}\nspec: {{}}\n"
    ));
    assert!(e.contains("unknown kind \"ConfigMap\""), "{e}");

    let e = errors(&base.replace("count: 1", "count: 0"));
    assert!(
        e.contains("controlPlaneConfiguration.count: must be at least 1"),
        "{e}"
    );
    let e = errors(&base.replace("host: \"10.77.0.90\"", "host: \"cp.example.com\""));
    assert!(
        e.contains("endpoint.host: \"cp.example.com\" is not an IPv4 address"),
        "{e}"
    );
    let e = errors(&base.replace("type: cp", "{}"));
    assert!(e.contains("hardwareSelector"), "{e}");
    let e = errors(&base.replace("- ssh-ed25519 AAAA", "- ssh-foo AAAA"));
    assert!(e.contains("sshAuthorizedKeys: \"ssh-foo"), "{e}");
    // Accepted, with a warning each: fields that change nothing for provisioning.
    let ok = base.replace(
        "  managementCluster:\n",
        "  eksaVersion: v0.20.0\n  machineHealthCheck: {nodeStartupTimeout: 20m0s}\n  managementCluster:\n",
    );
    let w = warnings(&ok);
    assert!(
        w.contains(&format!(
            "cluster.yaml:{}: Cluster.spec.eksaVersion: accepted, but has no effect in Kiln",
            loc(&ok, "v0.20.0")
        )),
        "{w}"
    );
    assert!(
        w.contains(&format!(
            "cluster.yaml:{}: Cluster.spec.machineHealthCheck: accepted, but has no effect in Kiln: Kiln does not remediate",
            loc(&ok, "{nodeStartupTimeout")
        )),
        "{w}"
    );
    assert_eq!(w.lines().count(), 2, "{w}");
    // The examples themselves parse without a warning.
    assert_eq!(warnings(&base), "");
}

const TEMPLATE_T: &str = "---\napiVersion: anywhere.eks.amazonaws.com/v1alpha1\nkind: TinkerbellTemplateConfig\nmetadata:\n  name: t\nspec:\n  template:\n    name: t\n    version: \"0.1\"\n    global_timeout: 6000\n    tasks: []\n";

#[test]
fn template_refs_read_as_eks_anywhere_reads_them() {
    let base = std::fs::read_to_string(examples().join("single-node.eksa.yaml")).unwrap();
    // An empty name is the default template, like `{}`: no warning, the same spec.
    let empty_name = base.replace(
        "templateRef: {}",
        "templateRef: {kind: TinkerbellTemplateConfig, name: \"\"}",
    );
    assert_eq!(warnings(&empty_name), "");
    assert_eq!(
        ClusterSpec::parse(&empty_name, "x").unwrap(),
        spec("single-node.eksa.yaml")
    );
    // A name with no such template in the file: EKS Anywhere uses its default template.
    let missing = base.replace(
        "templateRef: {}",
        "templateRef: {kind: TinkerbellTemplateConfig, name: t}",
    );
    let w = warnings(&missing);
    assert!(
        w.contains(&format!(
            "cluster.yaml:{}: TinkerbellMachineConfig[single-node-cp].spec.templateRef.name: no TinkerbellTemplateConfig named \"t\" in this file: the default installation is used",
            loc(&missing, "t}")
        )),
        "{w}"
    );
    // A template in the file that nothing uses: a warning.
    let unused = format!("{base}{TEMPLATE_T}");
    let w = warnings(&unused);
    assert!(
        w.contains(&format!(
            "cluster.yaml:{}: TinkerbellTemplateConfig[t]: no templateRef of a used machine config names this template",
            {
                // The document starts on the apiVersion line, just above its kind.
                let kind_line: usize = loc(&unused, "kind: TinkerbellTemplateConfig")
                    .split(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                format!("{}:1", kind_line - 1)
            }
        )),
        "{w}"
    );
    // A used machine config whose template is in the file: Kiln cannot run it.
    let used = format!("{missing}{TEMPLATE_T}");
    let e = errors(&used);
    assert!(
        e.contains("TinkerbellMachineConfig[single-node-cp].spec.templateRef.name: not supported: the TinkerbellTemplateConfig \"t\""),
        "{e}"
    );
    // A templateRef to another kind is a mistake.
    let e = errors(&base.replace("templateRef: {}", "templateRef: {kind: ConfigMap}"));
    assert!(
        e.contains(
            "spec.templateRef.kind: \"ConfigMap\": a templateRef names a TinkerbellTemplateConfig"
        ),
        "{e}"
    );
}

#[test]
fn workers_omitted_or_empty_mean_none_and_leave_the_control_plane_untainted() {
    let base = std::fs::read_to_string(examples().join("single-node.eksa.yaml")).unwrap();
    let empty = base.replace(
        "  datacenterRef:\n",
        "  workerNodeGroupConfigurations: []\n  datacenterRef:\n",
    );
    assert_eq!(
        spec("single-node.eksa.yaml"),
        ClusterSpec::parse(&empty, "x").unwrap()
    );
    let s = spec("single-node.eksa.yaml");
    assert!(s.worker_groups.is_empty());
    assert!(s.control_plane_taints().is_empty());
    assert_eq!(
        spec("three-node.eksa.yaml").control_plane_taints()[0].key,
        "node-role.kubernetes.io/control-plane"
    );
}

struct Rendered {
    spec: ClusterSpec,
    plan: Plan,
    secrets: ClusterSecrets,
    seeds: Vec<(String, Role, kiln_cluster::NodeSeed)>,
}

fn render_all(file: &str, version: Option<&str>) -> Rendered {
    let mut spec = spec(file);
    if let Some(v) = version {
        spec.kubernetes_version = v.parse().unwrap();
    }
    let plan = plan(&spec, &hardware()).unwrap();
    let secrets = ClusterSecrets::generate().unwrap();
    let seeds = plan
        .nodes
        .iter()
        .map(|n| {
            let inputs = NodeInputs::new(
                format!("wf-{}", n.hostname),
                format!("http://10.77.0.1:8080/v1/phone-home/tok-{}", n.hostname),
            );
            let seed = render_node(&spec, &plan, n, &secrets, &inputs).unwrap();
            (n.hostname.clone(), n.role.clone(), seed)
        })
        .collect();
    Rendered {
        spec,
        plan,
        secrets,
        seeds,
    }
}

#[test]
fn single_node_writes_empty_taints_and_waits_for_its_api_server() {
    let r = render_all("single-node.eksa.yaml", None);
    let (_, role, seed) = &r.seeds[0];
    assert_eq!(*role, Role::ControlPlane { first: true });
    let ud = &seed.user_data;
    assert!(ud.starts_with("#cloud-config\n"));
    let init = written_file(ud, "/run/kubeadm/init.yaml").unwrap();
    assert!(
        init.contains("apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\n"),
        "{init}"
    );
    assert!(init.contains("  taints: []\n"), "{init}");
    assert!(init.contains("kind: ClusterConfiguration"), "{init}");
    assert!(init.contains("kubernetesVersion: stable-1.30\n"), "{init}");
    assert!(
        init.contains("controlPlaneEndpoint: \"10.77.0.90:6443\"\n"),
        "{init}"
    );
    assert!(
        init.contains(&format!(
            "token: \"{}\"",
            r.secrets.bootstrap_token.expose()
        )) || init.contains(&format!("token: {}", r.secrets.bootstrap_token.expose())),
        "{init}"
    );
    let script = written_file(ud, "/usr/local/sbin/kiln-bootstrap").unwrap();
    assert!(
        script.contains("kubeadm init --config /run/kubeadm/init.yaml"),
        "{script}"
    );
    // After kubeadm init, before the script reports success: the API server must answer on
    // cp1's own (advertise) address, verified with the cluster CA; nothing is uploaded.
    let readyz =
        "curl -fsS -m 5 --cacert /etc/kubernetes/pki/ca.crt https://10.77.0.11:6443/readyz";
    let (init_at, wait_at, done_at) = (
        script.find("kubeadm init --config").unwrap(),
        script.find(readyz).unwrap_or_else(|| panic!("{script}")),
        script.find("echo 0 >/run/kiln-bootstrap.rc").unwrap(),
    );
    assert!(init_at < wait_at && wait_at < done_at, "{script}");
    assert!(
        script.contains(
            "kiln-bootstrap: the API server answers /readyz at https://10.77.0.11:6443/readyz"
        ),
        "{script}"
    );
    assert!(
        !script.contains("--data-binary @/etc/kubernetes/admin.conf"),
        "{script}"
    );
    assert!(
        !ud.contains("/kubeconfig"),
        "no kubeconfig upload URL: {ud}"
    );
    assert!(
        ud.contains("url: \"http://10.77.0.1:8080/v1/phone-home/tok-cp1\""),
        "{ud}"
    );
    assert!(
        written_file(ud, "/etc/kubernetes/pki/ca.key")
            .unwrap()
            .contains("PRIVATE KEY")
    );
    // The endpoint is a VIP (not cp1's own address): kube-vip holds it, on super-admin.conf during init.
    let vip = written_file(ud, "/etc/kiln/kube-vip.yaml").unwrap();
    assert!(
        vip.contains("path: /etc/kubernetes/super-admin.conf"),
        "{vip}"
    );
    assert!(seed.meta_data.contains("local-hostname: cp1"));
    assert!(seed.network_config.contains("addresses: [10.77.0.11/24]"));
    // Debug never shows the keys.
    assert!(!format!("{seed:?}").contains("PRIVATE KEY"));
}

#[test]
fn workers_and_extra_control_planes_join_with_the_pinned_ca() {
    let r = render_all("ha.eksa.yaml", Some("1.31"));
    let hash = r.secrets.ca_cert_hash().unwrap();
    for (host, role, seed) in &r.seeds {
        let ud = &seed.user_data;
        match role {
            Role::ControlPlane { first: true } => {
                assert!(written_file(ud, "/run/kubeadm/join.yaml").is_none());
                let init = written_file(ud, "/run/kubeadm/init.yaml").unwrap();
                assert!(
                    init.contains("apiVersion: kubeadm.k8s.io/v1beta4"),
                    "{init}"
                );
                // Workers exist: the control planes keep the standard taint.
                assert!(
                    init.contains("key: node-role.kubernetes.io/control-plane\n"),
                    "{init}"
                );
                assert!(init.contains("- name: node-ip\n"), "{init}");
            }
            _ => {
                let join = written_file(ud, "/run/kubeadm/join.yaml").unwrap();
                assert!(
                    join.contains("apiServerEndpoint: \"10.77.0.90:6443\""),
                    "{host}: {join}"
                );
                assert!(join.contains(&format!("- \"{hash}\"")), "{host}: {join}");
                assert!(
                    join.contains("timeouts:\n  discovery: \"30m0s\"\n"),
                    "{host}: {join}"
                );
                let script = written_file(ud, "/usr/local/sbin/kiln-bootstrap").unwrap();
                assert!(
                    script.contains("kubeadm join --config /run/kubeadm/join.yaml"),
                    "{script}"
                );
                assert!(
                    !script.contains("/readyz"),
                    "{host}: only the first control plane waits for its API server"
                );
                if role.is_control_plane() {
                    assert!(
                        join.contains("controlPlane:\n  localAPIEndpoint:"),
                        "{host}: {join}"
                    );
                    assert!(written_file(ud, "/etc/kubernetes/pki/etcd/ca.key").is_some());
                    let vip = written_file(ud, "/etc/kiln/kube-vip.yaml").unwrap();
                    assert!(vip.contains("path: /etc/kubernetes/admin.conf"), "{vip}");
                    assert!(script.contains("install_kube_vip\n\necho 0"), "{script}");
                } else {
                    assert!(!join.contains("controlPlane:"), "{host}: {join}");
                    assert!(join.contains("taints: []"), "{host}: {join}");
                    assert!(
                        join.contains("value: example.com/pool=general"),
                        "{host}: {join}"
                    );
                    // Workers get no CA keys at all.
                    assert!(!ud.contains("PRIVATE KEY"), "{host}");
                    assert!(written_file(ud, "/etc/kiln/kube-vip.yaml").is_none());
                }
            }
        }
    }
}

#[test]
fn rendering_is_deterministic_from_stored_state() {
    let r = render_all("three-node.kiln.yaml", None);
    let stored = serde_json::to_string(&(&r.secrets, &r.plan, &r.spec)).unwrap();
    let (secrets, plan, spec): (ClusterSecrets, Plan, ClusterSpec) =
        serde_json::from_str(&stored).unwrap();
    for (host, _, seed) in &r.seeds {
        let node = plan.node(host).unwrap();
        let inputs = NodeInputs::new(
            format!("wf-{host}"),
            format!("http://10.77.0.1:8080/v1/phone-home/tok-{host}"),
        );
        let again = render_node(&spec, &plan, node, &secrets, &inputs).unwrap();
        assert_eq!(&again, seed, "{host}");
    }
}

fn require_tool(name: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: apt-get install {package} (CI installs it in .ci/run)"
    );
}

#[test]
fn real_cloud_init_accepts_every_user_data() {
    require_tool("cloud-init", "cloud-init");
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("single-node.eksa.yaml", None),
        ("single-node.kiln.yaml", Some("1.31")),
        ("three-node.eksa.yaml", None),
        ("three-node.eksa.yaml", Some("1.30")),
        ("ha.eksa.yaml", None),
        ("ha.kiln.yaml", Some("1.31.0")),
    ];
    let mut checked = 0;
    for (file, version) in cases {
        let r = render_all(file, version);
        for (host, _, seed) in &r.seeds {
            let path = dir
                .path()
                .join(format!("{file}-{}-{host}", version.unwrap_or("")));
            std::fs::write(&path, &seed.user_data).unwrap();
            let out = Command::new("cloud-init")
                .args(["schema", "--config-file"])
                .arg(&path)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stdout.contains("Valid cloud-config"),
                "{file} {version:?} {host}: cloud-init schema says:\n{stdout}{stderr}\n{}",
                seed.user_data
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 1 + 1 + 3 + 3 + 4 + 4);
}

#[test]
fn ca_cert_hash_matches_openssl() {
    require_tool("openssl", "openssl");
    let secrets = ClusterSecrets::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &secrets.cluster_ca.cert_pem).unwrap();
    // kubeadm's documented recipe, on the certificate (not the key Kiln hashes).
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "set -e; openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der | sha256sum",
            ca.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(secrets.ca_cert_hash().unwrap(), format!("sha256:{hex}"));

    // The CAs are CAs, and the key belongs to the certificate.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&ca)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(
        text.contains("Subject: CN = kubernetes") || text.contains("Subject: CN=kubernetes"),
        "{text}"
    );
    let key = dir.path().join("ca.key");
    std::fs::write(&key, secrets.cluster_ca.key_pem.expose()).unwrap();
    let pub_from_key = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    let pub_from_cert = Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(&ca)
        .output()
        .unwrap();
    assert_eq!(pub_from_key.stdout, pub_from_cert.stdout);
}

#[test]
fn dry_run_writes_private_seed_directories() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seeds");
    let r = dry_run(&spec("ha.kiln.yaml"), &hardware(), &out).unwrap();
    assert_eq!(r.plan.nodes.len(), 4);
    assert_eq!(r.files.len(), 12);
    for host in ["cp1", "cp2", "cp3", "worker1"] {
        let d = out.join(host);
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for f in ["user-data", "meta-data", "network-config"] {
            let m = std::fs::metadata(d.join(f)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{host}/{f}");
        }
        let ud = std::fs::read_to_string(d.join("user-data")).unwrap();
        assert!(ud.contains("kiln.invalid"), "{ud}");
    }
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(!out.join("worker2").exists());
}

#[test]
fn bootstrap_scripts_parse_as_posix_sh() {
    require_tool("dash", "dash");
    let dir = tempfile::tempdir().unwrap();
    for (file, version) in [
        ("ha.eksa.yaml", None),
        ("three-node.kiln.yaml", Some("1.28")),
    ] {
        let r = render_all(file, version);
        for (host, _, seed) in &r.seeds {
            let script = written_file(&seed.user_data, "/usr/local/sbin/kiln-bootstrap").unwrap();
            assert!(
                script.starts_with("#!/bin/sh\nset -eu\n") || script.starts_with("#!/bin/sh\n#")
            );
            let path = dir.path().join(format!("{file}-{host}.sh"));
            std::fs::write(&path, &script).unwrap();
            let out = Command::new("dash").arg("-n").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{file} {host}: {}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn the_seed_single_node_example_with_a_spare_worker_config_parses_and_plans() {
    let text = fixture("seed-single-node.eksa.yaml");
    let parsed =
        ClusterSpec::parse_with_warnings(&text, "seed.yaml").unwrap_or_else(|e| panic!("{e}"));
    let w: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
    let w = w.join("\n");
    assert!(
        w.contains(&format!(
            "seed.yaml:{}:3: TinkerbellMachineConfig[single-node]: no machineGroupRef of the Cluster names this machine config: it is not used",
            line_of(&text, "  hardwareSelector: {}")
        )),
        "{w}"
    );
    // Its empty selector would be an error in a used config; here it is only reported.
    assert!(
        w.contains("spec.hardwareSelector: must name at least one label (an empty selector would take any machine) (in an unused machine config)"),
        "{w}"
    );
    let s = &parsed.spec;
    assert!(s.worker_groups.is_empty());
    assert!(s.control_plane_taints().is_empty());
    let csv = fixture("seed-hardware.csv");
    let hw = kiln_model::csv::parse_hardware_csv("seed-hardware.csv", &csv).unwrap();
    let p = plan(s, &hw).unwrap();
    assert_eq!(p.nodes.len(), 1);
    assert_eq!(p.nodes[0].hostname, "eksa-dev01");
    assert_eq!(p.nodes[0].role, Role::ControlPlane { first: true });
    assert!(p.kube_vip, "10.80.8.90 is a VIP next to 10.80.8.21/22");
    // It renders, untainted.
    let secrets = ClusterSecrets::generate().unwrap();
    let inputs = NodeInputs::new("wf-1", "http://10.80.8.1:8080/v1/phone-home/tok");
    let seed = render_node(s, &p, &p.nodes[0], &secrets, &inputs).unwrap();
    let init = written_file(&seed.user_data, "/run/kubeadm/init.yaml").unwrap();
    assert!(init.contains("  taints: []\n"), "{init}");
}

fn three_node_with(worker: &str) -> String {
    std::fs::read_to_string(examples().join("three-node.eksa.yaml"))
        .unwrap()
        .replace("  - name: md-0\n    count: 2\n", worker)
}

#[test]
fn unnamed_worker_groups_are_md_0_md_1_by_position() {
    let unnamed = three_node_with("  - count: 2\n");
    let s = ClusterSpec::parse(&unnamed, "x").unwrap();
    assert_eq!(s.worker_groups[0].name, "md-0");
    assert_eq!(s, spec("three-node.eksa.yaml"));

    // Every unnamed group is named by its position (EKS Anywhere names only the first).
    let two = three_node_with(
        "  - name: big\n    count: 1\n    machineGroupRef: {kind: TinkerbellMachineConfig, name: three-node-worker}\n  - count: 1\n",
    );
    let s = ClusterSpec::parse(&two, "x").unwrap();
    let names: Vec<&str> = s.worker_groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["big", "md-1"]);
    // The default name counts for uniqueness.
    let clash = three_node_with(
        "  - count: 1\n    machineGroupRef: {kind: TinkerbellMachineConfig, name: three-node-worker}\n  - name: md-0\n    count: 1\n",
    );
    let e = errors(&clash);
    assert!(
        e.contains("workerNodeGroupConfigurations[1].name: a second worker group named \"md-0\""),
        "{e}"
    );
    let clash = three_node_with(
        "  - name: md-1\n    count: 1\n    machineGroupRef: {kind: TinkerbellMachineConfig, name: three-node-worker}\n  - count: 1\n",
    );
    let e = errors(&clash);
    assert!(e.contains("a second worker group named \"md-1\""), "{e}");
}

#[test]
fn control_plane_taints_without_workers_are_refused_at_the_taints() {
    let base = std::fs::read_to_string(examples().join("single-node.eksa.yaml")).unwrap();
    let tainted = base.replace(
        "    count: 1\n",
        "    count: 1\n    taints:\n    - {key: dedicated, value: infra, effect: NoSchedule}\n",
    );
    let e = errors(&tainted);
    assert_eq!(
        e,
        format!(
            "cluster.yaml:{}: Cluster.spec.controlPlaneConfiguration.taints: cannot taint control plane when there is no worker node (workloads run on the control planes: remove the taints, or add a worker group)",
            loc(&tainted, "{key: dedicated")
        )
    );
    // An empty list is what a single node needs anyway.
    let empty = base.replace("    count: 1\n", "    count: 1\n    taints: []\n");
    assert!(
        ClusterSpec::parse(&empty, "x")
            .unwrap()
            .control_plane_taints()
            .is_empty()
    );
    // With workers, the taints stand.
    let three = std::fs::read_to_string(examples().join("three-node.eksa.yaml"))
        .unwrap()
        .replace(
            "    count: 1\n",
            "    count: 1\n    taints:\n    - {key: dedicated, value: infra, effect: NoSchedule}\n",
        );
    let s = ClusterSpec::parse(&three, "x").unwrap();
    assert_eq!(s.control_plane_taints()[0].key, "dedicated");
    // Kiln's own format follows the same rule.
    let native = "kind: KilnCluster\nname: x\nkubernetesVersion: \"1.30\"\n\
                  controlPlane:\n  endpoint: 10.77.0.90\n  selector: {type: cp}\n  taints: [{key: a, effect: NoSchedule}]\n";
    let e = errors(native);
    assert!(
        e.starts_with("cluster.yaml:7:12: controlPlane.taints: cannot taint control plane when there is no worker node"),
        "{e}"
    );
}

#[test]
fn cross_field_errors_point_at_the_field_at_fault() {
    let base = std::fs::read_to_string(examples().join("three-node.eksa.yaml")).unwrap();
    let text = base.replace("host: \"10.77.0.90\"", "host: \"192.168.3.4\"");
    assert_eq!(
        errors(&text),
        format!(
            "cluster.yaml:{}: Cluster.spec.controlPlaneConfiguration.endpoint.host: the endpoint 192.168.3.4 lies inside the pod range 192.168.0.0/16 (Cluster.spec.clusterNetwork.pods.cidrBlocks, line {})",
            loc(&text, "\"192.168.3.4\""),
            loc(&text, "192.168.0.0/16").split(':').next().unwrap()
        )
    );
    let text = base.replace(
        "cidrBlocks: [10.96.0.0/12]",
        "cidrBlocks: [192.168.128.0/17]",
    );
    let e = errors(&text);
    assert!(
        e.starts_with(&format!(
            "cluster.yaml:{}: Cluster.spec.clusterNetwork.services.cidrBlocks: the service range 192.168.128.0/17 overlaps the pod range",
            loc(&text, "192.168.128.0/17")
        )),
        "{e}"
    );
    let text = base.replace("cidrBlocks: [10.96.0.0/12]", "cidrBlocks: [10.0.0.0/8]");
    assert!(
        errors(&text).starts_with(&format!(
            "cluster.yaml:{}: Cluster.spec.clusterNetwork.services.cidrBlocks: 10.0.0.0/8 is larger than the API server allows",
            loc(&text, "10.0.0.0/8")
        ))
    );
    let text = base.replace(
        "    pods:\n",
        "    nodes:\n      cidrMaskSize: 12\n    pods:\n",
    );
    let e = errors(&text);
    assert!(
        e.starts_with(&format!(
            "cluster.yaml:{}:21: Cluster.spec.clusterNetwork.nodes.cidrMaskSize: the per-node pod range /12 is larger than the pod range 192.168.0.0/16",
            line_of(&text, "      cidrMaskSize: 12")
        )),
        "{e}"
    );
    // The deprecated `cni` beside `cniConfig`: at `cni`.
    let text = base.replace("    cniConfig:\n", "    cni: cilium\n    cniConfig:\n");
    assert_eq!(
        errors(&text),
        format!(
            "cluster.yaml:{}:10: Cluster.spec.clusterNetwork.cni: set cniConfig only (cni is its deprecated form)",
            line_of(&text, "    cni: cilium")
        )
    );
    // An even number of control planes: EKS Anywhere's stacked-etcd rule, at the count.
    let text = std::fs::read_to_string(examples().join("ha.eksa.yaml"))
        .unwrap()
        .replace("count: 3", "count: 2");
    let e = errors(&text);
    assert_eq!(
        e,
        format!(
            "cluster.yaml:{}:12: Cluster.spec.controlPlaneConfiguration.count: 2: control plane node count cannot be an even number when using stacked etcd topology (etcd needs a majority: 1, 3 or 5)",
            line_of(&text, "    count: 2")
        )
    );
    // An osImageURL on both sides points at the machine config's.
    let text = base.replace(
        "  osFamily: ubuntu\n  templateRef: {}\n  users:\n  - name: ec2-user\n    sshAuthorizedKeys:\n    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKilnExampleKeyOnlyForDocs0000000000000 admin@example\n---",
        "  osFamily: ubuntu\n  osImageURL: http://10.77.0.1:8080/own.raw.zst\n  templateRef: {}\n---",
    );
    let e = errors(&text);
    assert!(
        e.starts_with(&format!(
            "cluster.yaml:{}: TinkerbellMachineConfig[three-node-cp].spec.osImageURL: \"http://10.77.0.1:8080/own.raw.zst\": osImageURL is also set on the TinkerbellDatacenterConfig",
            loc(&text, "http://10.77.0.1:8080/own")
        )),
        "{e}"
    );
    // "" is unset, as EKS Anywhere's docs write it beside a datacenter-wide image.
    let empty = base.replace(
        "  osFamily: ubuntu\n  templateRef: {}\n  users:\n  - name: ec2-user\n    sshAuthorizedKeys:\n    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKilnExampleKeyOnlyForDocs0000000000000 admin@example\n---",
        "  osFamily: ubuntu\n  osImageURL: \"\"\n  templateRef: {}\n---",
    );
    let s = ClusterSpec::parse(&empty, "x").unwrap();
    assert_eq!(
        s.control_plane.machine.image_url.as_deref(),
        Some("http://10.77.0.1:8080/images/ubuntu-2204-kube-1.31.raw.zst")
    );
}

#[test]
fn an_alias_bomb_is_a_clear_error() {
    // "Billion laughs": a few hundred bytes that would expand to 9^9 strings.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, next) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
        .windows(2)
        .map(|w| (w[0], w[1]))
    {
        bomb.push_str(&format!(
            "{next}: &{next} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
    }
    assert!(bomb.len() < 500, "{}", bomb.len());
    let e = errors(&bomb);
    assert!(
        e.starts_with("cluster.yaml:")
            && e.contains("invalid YAML: the file expands to more than 100000 YAML nodes"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}

/// What Kiln does with a field EKS Anywhere documents.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// Read and acted on (or, for object metadata and status, meaningless here): no warning.
    Honoured,
    /// Accepted with a warning that names it.
    Warned,
    /// Refused with an error that names it and says it is not supported, and why.
    Refused,
}

/// A Bare Metal spec of EKS Anywhere's with a marker line where each kind of field goes.
const EVERY_FIELD_BASE: &str = r#"apiVersion: anywhere.eks.amazonaws.com/v1alpha1
kind: Cluster
metadata:
  name: every
  #METADATA
spec:
  kubernetesVersion: "1.31"
  clusterNetwork:
    cniConfig:
      cilium:
        #CILIUM
    pods:
      cidrBlocks: [192.168.0.0/16]
    services:
      cidrBlocks: [10.96.0.0/12]
    #NETWORK
  controlPlaneConfiguration:
    count: 1
    endpoint:
      host: "10.77.0.90"
    machineGroupRef:
      kind: TinkerbellMachineConfig
      name: every-cp
    #CONTROL_PLANE
  workerNodeGroupConfigurations:
  - name: md-0
    count: 1
    machineGroupRef:
      kind: TinkerbellMachineConfig
      name: every-worker
    #WORKER
  datacenterRef:
    kind: TinkerbellDatacenterConfig
    name: every
  managementCluster:
    name: every
  #CLUSTER_SPEC
#CLUSTER
---
apiVersion: anywhere.eks.amazonaws.com/v1alpha1
kind: TinkerbellDatacenterConfig
metadata:
  name: every
spec:
  tinkerbellIP: "10.77.0.1"
  #DATACENTER
---
apiVersion: anywhere.eks.amazonaws.com/v1alpha1
kind: TinkerbellMachineConfig
metadata:
  name: every-cp
spec:
  hardwareSelector: {type: cp}
  osFamily: ubuntu
  templateRef: {}
  users:
  - name: ec2-user
    sshAuthorizedKeys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKilnExampleKeyOnlyForDocs0000000000000 admin@example
  #MACHINE
---
apiVersion: anywhere.eks.amazonaws.com/v1alpha1
kind: TinkerbellMachineConfig
metadata:
  name: every-worker
spec:
  hardwareSelector: {type: worker}
  osFamily: ubuntu
  templateRef: {}
---
#DOCUMENT
"#;

/// Every field of EKS Anywhere's Tinkerbell provider: the Cluster spec
/// (`cluster_types.go`), TinkerbellDatacenterConfig, TinkerbellMachineConfig (with
/// `hostosconfig_types.go`) and TinkerbellTemplateConfig, by their json tags, and the
/// Bare Metal configuration page. (marker, YAML at the marker's indentation, the key that
/// must be named, outcome)
const EVERY_FIELD: &[(&str, &str, &str, Outcome)] = &[
    ("#CLUSTER", "status: {}", "status", Outcome::Honoured),
    (
        "#METADATA",
        "namespace: default",
        "namespace",
        Outcome::Honoured,
    ),
    (
        "#METADATA",
        "annotations: {a: b}",
        "annotations",
        Outcome::Honoured,
    ),
    ("#METADATA", "labels: {a: b}", "labels", Outcome::Honoured),
    (
        "#CLUSTER_SPEC",
        "identityProviderRefs:\n- {kind: OIDCConfig, name: o}",
        "identityProviderRefs",
        Outcome::Refused,
    ),
    (
        "#CLUSTER_SPEC",
        "gitOpsRef: {kind: FluxConfig, name: f}",
        "gitOpsRef",
        Outcome::Refused,
    ),
    (
        "#CLUSTER_SPEC",
        "externalEtcdConfiguration: {count: 3}",
        "externalEtcdConfiguration",
        Outcome::Refused,
    ),
    (
        "#CLUSTER_SPEC",
        "proxyConfiguration: {httpProxy: \"http://p:3128\", httpsProxy: \"http://p:3128\", noProxy: [a]}",
        "proxyConfiguration",
        Outcome::Refused,
    ),
    (
        "#CLUSTER_SPEC",
        "registryMirrorConfiguration: {endpoint: 10.0.0.1, port: \"443\"}",
        "registryMirrorConfiguration",
        Outcome::Refused,
    ),
    (
        "#CLUSTER_SPEC",
        "podIamConfig: {serviceAccountIssuer: \"https://x\"}",
        "podIamConfig",
        Outcome::Refused,
    ),
    (
        "#CLUSTER_SPEC",
        "packages: {disable: true}",
        "packages",
        Outcome::Warned,
    ),
    (
        "#CLUSTER_SPEC",
        "bundlesRef: {name: b, namespace: n, apiVersion: v}",
        "bundlesRef",
        Outcome::Warned,
    ),
    (
        "#CLUSTER_SPEC",
        "eksaVersion: v0.20.0",
        "eksaVersion",
        Outcome::Warned,
    ),
    (
        "#CLUSTER_SPEC",
        "machineHealthCheck: {nodeStartupTimeout: 20m0s, unhealthyMachineTimeout: 5m0s, maxUnhealthy: 40%}",
        "machineHealthCheck",
        Outcome::Warned,
    ),
    (
        "#CLUSTER_SPEC",
        "etcdEncryption:\n- providers: []\n  resources: [secrets]",
        "etcdEncryption",
        Outcome::Refused,
    ),
    (
        "#CLUSTER_SPEC",
        "licenseToken: abc",
        "licenseToken",
        Outcome::Warned,
    ),
    (
        "#CONTROL_PLANE",
        "taints:\n- {key: a, value: b, effect: NoSchedule, timeAdded: null}",
        "taints",
        Outcome::Honoured,
    ),
    (
        "#CONTROL_PLANE",
        "labels: {example.com/x: y}",
        "labels",
        Outcome::Honoured,
    ),
    (
        "#CONTROL_PLANE",
        "upgradeRolloutStrategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1}}",
        "upgradeRolloutStrategy",
        Outcome::Warned,
    ),
    (
        "#CONTROL_PLANE",
        "skipLoadBalancerDeployment: true",
        "skipLoadBalancerDeployment",
        Outcome::Honoured,
    ),
    (
        "#CONTROL_PLANE",
        "certSans: [cp.example.com, 10.77.0.91]",
        "certSans",
        Outcome::Honoured,
    ),
    (
        "#CONTROL_PLANE",
        "machineHealthCheck: {nodeStartupTimeout: 20m0s}",
        "machineHealthCheck",
        Outcome::Warned,
    ),
    (
        "#CONTROL_PLANE",
        "apiServerExtraArgs: {a: b}",
        "apiServerExtraArgs",
        Outcome::Refused,
    ),
    (
        "#CONTROL_PLANE",
        "kubeletConfiguration: {maxPods: 50}",
        "kubeletConfiguration",
        Outcome::Refused,
    ),
    (
        "#CONTROL_PLANE",
        "auditPolicyContent: x",
        "auditPolicyContent",
        Outcome::Refused,
    ),
    (
        "#CONTROL_PLANE",
        "skipAdmissionForSystemResources: true",
        "skipAdmissionForSystemResources",
        Outcome::Refused,
    ),
    (
        "#CONTROL_PLANE",
        "skipAdmissionForSystemResources: false",
        "skipAdmissionForSystemResources",
        Outcome::Honoured,
    ),
    (
        "#WORKER",
        "autoscalingConfiguration: {minCount: 1, maxCount: 3}",
        "autoscalingConfiguration",
        Outcome::Refused,
    ),
    (
        "#WORKER",
        "taints:\n- {key: a, effect: PreferNoSchedule}",
        "taints",
        Outcome::Honoured,
    ),
    (
        "#WORKER",
        "labels: {example.com/x: y}",
        "labels",
        Outcome::Honoured,
    ),
    (
        "#WORKER",
        "upgradeRolloutStrategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}",
        "upgradeRolloutStrategy",
        Outcome::Warned,
    ),
    (
        "#WORKER",
        "kubernetesVersion: \"1.31\"",
        "kubernetesVersion",
        Outcome::Honoured,
    ),
    (
        "#WORKER",
        "machineHealthCheck: {maxUnhealthy: 1}",
        "machineHealthCheck",
        Outcome::Warned,
    ),
    (
        "#WORKER",
        "kubeletConfiguration: {maxPods: 50}",
        "kubeletConfiguration",
        Outcome::Refused,
    ),
    (
        "#WORKER",
        "failureDomains: [a]",
        "failureDomains",
        Outcome::Refused,
    ),
    (
        "#NETWORK",
        "dns: {resolvConf: {path: /etc/kiln/resolv.conf}}",
        "dns",
        Outcome::Refused,
    ),
    (
        "#NETWORK",
        "nodes: {cidrMaskSize: 24}",
        "nodes",
        Outcome::Honoured,
    ),
    (
        "#CILIUM",
        "policyEnforcementMode: default",
        "policyEnforcementMode",
        Outcome::Warned,
    ),
    (
        "#CILIUM",
        "egressMasqueradeInterfaces: eth0",
        "egressMasqueradeInterfaces",
        Outcome::Warned,
    ),
    (
        "#CILIUM",
        "skipUpgrade: false",
        "skipUpgrade",
        Outcome::Warned,
    ),
    (
        "#CILIUM",
        "routingMode: direct",
        "routingMode",
        Outcome::Warned,
    ),
    (
        "#CILIUM",
        "ipv4NativeRoutingCIDR: 10.77.0.0/24",
        "ipv4NativeRoutingCIDR",
        Outcome::Warned,
    ),
    (
        "#CILIUM",
        "ipv6NativeRoutingCIDR: fd00::/64",
        "ipv6NativeRoutingCIDR",
        Outcome::Warned,
    ),
    (
        "#CILIUM",
        "cniExclusive: true",
        "cniExclusive",
        Outcome::Warned,
    ),
    (
        "#CILIUM",
        "helmValues: {a: b}",
        "helmValues",
        Outcome::Warned,
    ),
    (
        "#DATACENTER",
        "osImageURL: \"http://10.77.0.1:8080/ubuntu-1.31.raw.zst\"",
        "osImageURL",
        Outcome::Honoured,
    ),
    (
        "#DATACENTER",
        "hookImagesURLPath: \"http://10.77.0.1:8080/hook\"",
        "hookImagesURLPath",
        Outcome::Warned,
    ),
    (
        "#DATACENTER",
        "skipLoadBalancerDeployment: true",
        "skipLoadBalancerDeployment",
        Outcome::Warned,
    ),
    (
        "#DATACENTER",
        "loadBalancerInterface: eth1",
        "loadBalancerInterface",
        Outcome::Warned,
    ),
    (
        "#DATACENTER",
        "isoBoot: false",
        "isoBoot",
        Outcome::Honoured,
    ),
    ("#DATACENTER", "isoBoot: true", "isoBoot", Outcome::Refused),
    (
        "#DATACENTER",
        "hookIsoURL: \"http://10.77.0.1:8080/hook.iso\"",
        "hookIsoURL",
        Outcome::Warned,
    ),
    (
        "#MACHINE",
        "hardwareAffinity: {required: [{labelSelector: {matchLabels: {type: cp}}}]}",
        "hardwareAffinity",
        Outcome::Refused,
    ),
    (
        "#MACHINE",
        "osImageURL: \"http://10.77.0.1:8080/ubuntu-1.31.raw.zst\"",
        "osImageURL",
        Outcome::Honoured,
    ),
    (
        "#MACHINE",
        "osImageURL: \"\"",
        "osImageURL",
        Outcome::Honoured,
    ),
    (
        "#MACHINE",
        "hostOSConfiguration: {ntpConfiguration: {servers: [time.example.com]}}",
        "hostOSConfiguration",
        Outcome::Refused,
    ),
    (
        "#MACHINE",
        "hostOSConfiguration: {certBundles: [{name: ca, data: x}]}",
        "hostOSConfiguration",
        Outcome::Refused,
    ),
    (
        "#MACHINE",
        "hostOSConfiguration: {bottlerocketConfiguration: {kernel: {sysctlSettings: {a: b}}}}",
        "hostOSConfiguration",
        Outcome::Refused,
    ),
    (
        "#DOCUMENT",
        "apiVersion: anywhere.eks.amazonaws.com/v1alpha1\nkind: TinkerbellTemplateConfig\nmetadata:\n  name: custom\nspec:\n  template:\n    name: custom\n    version: \"0.1\"\n    global_timeout: 6000\n    tasks: []",
        "TinkerbellTemplateConfig",
        Outcome::Warned,
    ),
];

#[test]
fn every_documented_eks_anywhere_field_is_honoured_warned_or_refused_never_unknown() {
    let base_spec = ClusterSpec::parse_with_warnings(EVERY_FIELD_BASE, "every.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(base_spec.warnings, vec![]);
    for (marker, yaml, key, outcome) in EVERY_FIELD {
        let marker_line = EVERY_FIELD_BASE
            .lines()
            .find(|l| l.trim() == *marker)
            .unwrap();
        let indent = &marker_line[..marker_line.len() - marker.len()];
        let block: Vec<String> = yaml.lines().map(|l| format!("{indent}{l}")).collect();
        let text = EVERY_FIELD_BASE.replace(
            &format!("\n{marker_line}\n"),
            &format!("\n{}\n", block.join("\n")),
        );
        let context = format!("{marker} {yaml:?}");
        match ClusterSpec::parse_with_warnings(&text, "every.yaml") {
            Ok(parsed) => {
                let w: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
                match outcome {
                    Outcome::Honoured => assert!(w.is_empty(), "{context}: {w:?}"),
                    Outcome::Warned => assert!(
                        w.len() == 1 && w[0].contains(key),
                        "{context}: one warning naming {key} expected, got {w:?}"
                    ),
                    Outcome::Refused => panic!("{context}: accepted, with {w:?}"),
                }
            }
            Err(errs) => {
                let e = errs.to_string();
                assert!(!e.contains("unknown field"), "{context}: {e}");
                assert_eq!(*outcome, Outcome::Refused, "{context}: {e}");
                assert!(
                    errs.0.len() == 1 && e.contains(key) && e.contains("not supported: "),
                    "{context}: {e}"
                );
            }
        }
    }
}

#[test]
fn worker_groups_follow_eks_anywhere_counts_and_taint_rule() {
    // count 0 is a group with no machine (EKS Anywhere allows it), with a warning.
    let empty = three_node_with("  - name: md-0\n    count: 0\n");
    let w = warnings(&empty);
    assert_eq!(
        w,
        format!(
            "cluster.yaml:{}:12: Cluster.spec.workerNodeGroupConfigurations[0].count: 0: this worker group gets no machine",
            line_of(&empty, "    count: 0")
        )
    );
    let s = ClusterSpec::parse(&empty, "x").unwrap();
    let p = plan(&s, &hardware()).unwrap();
    assert_eq!(p.nodes.len(), 1);
    assert!(p.nodes[0].role.is_control_plane());

    // Some group must take ordinary pods: every group repelling them is refused.
    let repelling = three_node_with(
        "  - name: md-0\n    count: 2\n    taints:\n    - {key: gpu, effect: NoSchedule}\n",
    );
    assert_eq!(
        errors(&repelling),
        format!(
            "cluster.yaml:{}: Cluster.spec.workerNodeGroupConfigurations[0].taints: at least one WorkerNodeGroupConfiguration must not have NoExecute and/or NoSchedule taints (ordinary pods need somewhere to run)",
            loc(&repelling, "{key: gpu")
        )
    );
    let preferring = repelling.replace("effect: NoSchedule", "effect: PreferNoSchedule");
    assert_eq!(
        ClusterSpec::parse(&preferring, "x").unwrap().worker_groups[0].taints[0].key,
        "gpu"
    );
}
