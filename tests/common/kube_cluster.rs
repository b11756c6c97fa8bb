//! A real control plane (etcd + kube-apiserver, no kubelet) for a test: started by
//! `tests/e2e/cluster.sh up` in a temporary directory, stopped by `down` when dropped.
//! The binaries come from tests/e2e/tools.sh (built once, cached).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running etcd + kube-apiserver.
pub struct KubeCluster {
    dir: tempfile::TempDir,
    script: PathBuf,
}

impl KubeCluster {
    /// Starts one (about 10 s; panics with the script's output when it fails).
    pub fn start() -> KubeCluster {
        let dir = tempfile::Builder::new()
            .prefix("kd-kube-")
            .tempdir_in("/tmp")
            .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/cluster.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("up")
            .arg(dir.path())
            .output()
            .expect("run tests/e2e/cluster.sh");
        let cluster = KubeCluster { dir, script };
        assert!(
            out.status.success(),
            "tests/e2e/cluster.sh up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    /// The admin kubeconfig (system:masters).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// A client as admin, or impersonating `user` (who has only what RBAC grants it).
    pub async fn client(&self, user: Option<&str>) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig()).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        config.auth_info.impersonate = user.map(str::to_string);
        kube::Client::try_from(config).unwrap()
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("down")
            .arg(self.dir.path())
            .output();
    }
}
