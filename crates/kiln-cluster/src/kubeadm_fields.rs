//! kubeadm cannot be installed here, so every key path Kiln writes into a kubeadm
//! config is checked against the fields of kubeadm's published Go types, transcribed
//! from github.com/kubernetes/kubernetes:
//!
//! - `cmd/kubeadm/app/apis/kubeadm/v1beta3/types.go` at 428c3fe9540a2cbe8daf4645879a87b30bbf1d02
//! - `cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go` at 1329935739c3aa007d23cb9a4dadfee9d59ff79b
//! - `cmd/kubeadm/app/apis/bootstraptoken/v1/types.go` at 95f08499d652a6211121d8af35f470609217c730
//! - `corev1.Taint` (key, value, effect, timeAdded)
//!
//! `[]` marks a list element, `*` any map key (v1beta3's `extraArgs` maps).

use std::collections::BTreeSet;

use crate::yaml::{Node, Value, parse_documents};

const BOOTSTRAP_TOKEN: &[&str] = &[
    "bootstrapTokens[].token",
    "bootstrapTokens[].description",
    "bootstrapTokens[].ttl",
    "bootstrapTokens[].expires",
    "bootstrapTokens[].usages[]",
    "bootstrapTokens[].groups[]",
];

const TAINT: &[&str] = &["key", "value", "effect", "timeAdded"];

const HOST_PATH_MOUNT: &[&str] = &["name", "hostPath", "mountPath", "readOnly", "pathType"];

fn v1beta3_node_registration() -> Vec<String> {
    let mut v: Vec<String> = [
        "name",
        "criSocket",
        "kubeletExtraArgs.*",
        "ignorePreflightErrors[]",
        "imagePullPolicy",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(TAINT.iter().map(|f| format!("taints[].{f}")));
    v
}

fn v1beta4_node_registration() -> Vec<String> {
    let mut v: Vec<String> = [
        "name",
        "criSocket",
        "kubeletExtraArgs[].name",
        "kubeletExtraArgs[].value",
        "ignorePreflightErrors[]",
        "imagePullPolicy",
        "imagePullSerial",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(TAINT.iter().map(|f| format!("taints[].{f}")));
    v
}

const V1BETA4_TIMEOUTS: &[&str] = &[
    "controlPlaneComponentHealthCheck",
    "kubeletHealthCheck",
    "kubernetesAPICall",
    "etcdAPICall",
    "tlsBootstrap",
    "discovery",
    "upgradeManifests",
];

fn prefixed(prefix: &str, fields: impl IntoIterator<Item = String>) -> Vec<String> {
    fields
        .into_iter()
        .map(|f| format!("{prefix}.{f}"))
        .collect()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The field groups shared by the kinds of one kubeadm apiVersion.
struct Groups {
    v4: bool,
    node_reg: Vec<String>,
    extra_args: Vec<String>,
    extra_envs: Vec<String>,
    /// An API server / controller manager / scheduler.
    component: Vec<String>,
    api_endpoint: Vec<String>,
}

impl Groups {
    fn of(api: &str) -> Groups {
        let v4 = api == "kubeadm.k8s.io/v1beta4";
        assert!(
            v4 || api == "kubeadm.k8s.io/v1beta3",
            "unknown apiVersion {api}"
        );
        let node_reg = if v4 {
            v1beta4_node_registration()
        } else {
            v1beta3_node_registration()
        };
        let extra_args = if v4 {
            strs(&["extraArgs[].name", "extraArgs[].value"])
        } else {
            strs(&["extraArgs.*"])
        };
        let extra_envs = if v4 {
            strs(&[
                "extraEnvs[].name",
                "extraEnvs[].value",
                "extraEnvs[].valueFrom",
            ])
        } else {
            Vec::new()
        };
        let component = {
            let mut c = extra_args.clone();
            c.extend(
                HOST_PATH_MOUNT
                    .iter()
                    .map(|f| format!("extraVolumes[].{f}")),
            );
            c.extend(extra_envs.clone());
            c
        };
        Groups {
            v4,
            node_reg,
            extra_args,
            extra_envs,
            component,
            api_endpoint: strs(&["advertiseAddress", "bindPort"]),
        }
    }
}

/// Allowed key paths per (apiVersion, kind).
fn allowed(api: &str, kind: &str) -> BTreeSet<String> {
    let g = Groups::of(api);
    let mut out: Vec<String> = strs(&["apiVersion", "kind"]);
    match kind {
        "InitConfiguration" => out.extend(init_fields(g)),
        "ClusterConfiguration" => out.extend(cluster_fields(g)),
        "JoinConfiguration" => out.extend(join_fields(g)),
        other => panic!("unknown kind {other}"),
    }
    out.into_iter().collect()
}

fn init_fields(g: Groups) -> Vec<String> {
    let mut out = strs(BOOTSTRAP_TOKEN);
    out.extend(prefixed("nodeRegistration", g.node_reg));
    out.extend(prefixed("localAPIEndpoint", g.api_endpoint));
    out.extend(strs(&[
        "certificateKey",
        "skipPhases[]",
        "patches.directory",
    ]));
    if g.v4 {
        out.push("dryRun".into());
        out.extend(prefixed("timeouts", strs(V1BETA4_TIMEOUTS)));
    }
    out
}

fn cluster_fields(g: Groups) -> Vec<String> {
    let mut out = Vec::new();
    let mut local = strs(&[
        "imageRepository",
        "imageTag",
        "dataDir",
        "serverCertSANs[]",
        "peerCertSANs[]",
    ]);
    local.extend(g.extra_args.clone());
    local.extend(g.extra_envs);
    out.extend(prefixed("etcd.local", local));
    out.extend(prefixed(
        "etcd.external",
        strs(&["endpoints[]", "caFile", "certFile", "keyFile"]),
    ));
    out.extend(prefixed(
        "networking",
        strs(&["serviceSubnet", "podSubnet", "dnsDomain"]),
    ));
    out.extend(strs(&[
        "kubernetesVersion",
        "controlPlaneEndpoint",
        "certificatesDir",
        "imageRepository",
        "featureGates.*",
        "clusterName",
        "dns.imageRepository",
        "dns.imageTag",
    ]));
    let mut api_server = g.component.clone();
    api_server.push("certSANs[]".into());
    if !g.v4 {
        api_server.push("timeoutForControlPlane".into());
    }
    out.extend(prefixed("apiServer", api_server));
    out.extend(prefixed("controllerManager", g.component.clone()));
    out.extend(prefixed("scheduler", g.component));
    if g.v4 {
        out.extend(strs(&[
            "dns.disabled",
            "proxy.disabled",
            "encryptionAlgorithm",
            "certificateValidityPeriod",
            "caCertificateValidityPeriod",
        ]));
    }
    out
}

fn join_fields(g: Groups) -> Vec<String> {
    let mut out = prefixed("nodeRegistration", g.node_reg);
    out.push("caCertPath".into());
    out.extend(prefixed(
        "discovery.bootstrapToken",
        strs(&[
            "token",
            "apiServerEndpoint",
            "caCertHashes[]",
            "unsafeSkipCAVerification",
        ]),
    ));
    out.extend(strs(&[
        "discovery.file.kubeConfigPath",
        "discovery.tlsBootstrapToken",
    ]));
    out.extend(prefixed("controlPlane.localAPIEndpoint", g.api_endpoint));
    out.extend(strs(&[
        "controlPlane.certificateKey",
        "skipPhases[]",
        "patches.directory",
    ]));
    if g.v4 {
        out.push("dryRun".into());
        out.extend(prefixed("timeouts", strs(V1BETA4_TIMEOUTS)));
    } else {
        out.push("discovery.timeout".into());
    }
    out
}

/// Leaf key paths of a document (an empty list or map is a leaf).
fn paths(node: &Node, prefix: &str, out: &mut Vec<String>) {
    match &node.value {
        Value::Map(entries) if !entries.is_empty() => {
            for (k, _, v) in entries {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                paths(v, &p, out);
            }
        }
        Value::Seq(items) if !items.is_empty() => {
            for item in items {
                paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

fn field(doc: &Node, key: &str) -> String {
    match &doc.value {
        Value::Map(e) => e
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, v)| match &v.value {
                Value::Scalar { text, .. } => text.clone(),
                _ => String::new(),
            })
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Every key path of every document in `config` that kubeadm's types lack.
pub(crate) fn unknown_paths(config: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for doc in parse_documents(config).expect("kubeadm config parses") {
        let api = field(&doc, "apiVersion");
        let kind = field(&doc, "kind");
        let ok = allowed(&api, &kind);
        let mut found = Vec::new();
        paths(&doc, "", &mut found);
        for p in found {
            // `taints: []` is a leaf at the list itself; so are the map wildcards.
            let generic = generalize(&p);
            let is_prefix_of_allowed = ok.iter().any(|a| {
                a.starts_with(&format!("{generic}[]")) || a.starts_with(&format!("{generic}."))
            });
            if !ok.contains(&generic) && !is_prefix_of_allowed {
                bad.push(format!("{kind} ({api}): {p}"));
            }
        }
    }
    bad
}

/// `a.kubeletExtraArgs.node-ip` → `a.kubeletExtraArgs.*` where the schema has a map there.
fn generalize(path: &str) -> String {
    for map_field in ["kubeletExtraArgs", "extraArgs", "featureGates"] {
        let marker = format!("{map_field}.");
        if let Some(i) = path.find(&marker) {
            let rest = &path[i + marker.len()..];
            if !rest.starts_with('[') && !rest.is_empty() {
                return format!("{}*", &path[..i + marker.len()]);
            }
        }
    }
    path.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;
    use crate::render::{init_config, join_config};
    use crate::secrets::ClusterSecrets;
    use crate::spec::{ClusterSpec, KubernetesVersion};

    fn examples() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/clusters")
    }

    fn configs(spec_file: &str, version: Option<&str>) -> Vec<String> {
        let text = std::fs::read_to_string(examples().join(spec_file)).unwrap();
        let mut spec = ClusterSpec::parse(&text, spec_file).unwrap();
        if let Some(v) = version {
            spec.kubernetes_version = v.parse::<KubernetesVersion>().unwrap();
        }
        let csv = std::fs::read_to_string(examples().join("hardware.csv")).unwrap();
        let hw = kiln_model::csv::parse_hardware_csv("hardware.csv", &csv).unwrap();
        let p = plan(&spec, &hw).unwrap();
        let secrets = ClusterSecrets::generate().unwrap();
        p.nodes
            .iter()
            .map(|n| {
                if n.role == (crate::plan::Role::ControlPlane { first: true }) {
                    init_config(&spec, n, &secrets)
                } else {
                    join_config(&spec, n, &secrets).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn every_emitted_kubeadm_field_exists_in_kubeadms_types() {
        let cases = [
            ("single-node.eksa.yaml", None, "v1beta3"),
            ("single-node.eksa.yaml", Some("1.31"), "v1beta4"),
            ("three-node.eksa.yaml", None, "v1beta4"),
            ("three-node.eksa.yaml", Some("1.30"), "v1beta3"),
            ("ha.eksa.yaml", None, "v1beta3"),
            ("ha.eksa.yaml", Some("1.32.1"), "v1beta4"),
        ];
        for (file, version, api) in cases {
            let all = configs(file, version);
            assert!(!all.is_empty());
            for config in &all {
                assert!(
                    config.contains(&format!("apiVersion: kubeadm.k8s.io/{api}\n")),
                    "{file}: {config}"
                );
                let bad = unknown_paths(config);
                assert!(
                    bad.is_empty(),
                    "{file} {version:?}: unknown kubeadm fields {bad:?}\n{config}"
                );
            }
        }
    }

    #[test]
    fn the_check_catches_fields_of_the_other_version() {
        // v1beta3's map form of extraArgs is wrong in v1beta4 ...
        let v4 = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  kubeletExtraArgs:\n    node-ip: 10.0.0.1\n";
        assert_eq!(
            unknown_paths(v4),
            vec![
                "InitConfiguration (kubeadm.k8s.io/v1beta4): nodeRegistration.kubeletExtraArgs.node-ip"
            ]
        );
        // ... v1beta4's timeouts do not exist in v1beta3, nor discovery.timeout in v1beta4.
        let v3 = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: JoinConfiguration\ntimeouts:\n  discovery: 5m0s\n";
        assert_eq!(unknown_paths(v3).len(), 1);
        let v4 = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  timeout: 5m0s\n";
        assert_eq!(unknown_paths(v4).len(), 1);
        let typo = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nnetworking:\n  podSubnets: 10.0.0.0/8\n";
        assert_eq!(unknown_paths(typo).len(), 1);
    }
}
