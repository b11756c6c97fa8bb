//! Writes a kubeconfig that points kubectl at the demo server.

use std::net::SocketAddr;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The kubeconfig text for `server` (trusting `ca_pem`) with the admin's bearer token.
pub fn render(server: SocketAddr, ca_pem: &str, user: &str, token: &str) -> String {
    let ca = STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kubedojo-demo
  cluster:
    server: https://{server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: kubedojo-demo
  context:
    cluster: kubedojo-demo
    user: {user}
    namespace: default
current-context: kubedojo-demo
"
    )
}

/// Writes the kubeconfig with owner-only permissions.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
