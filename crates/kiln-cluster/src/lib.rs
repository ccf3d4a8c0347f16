//! Cluster specs to per-node cloud-init (kubeadm init/join, PKI, bootstrap token, static network).
