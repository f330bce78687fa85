//! Writes the kubeconfig a client (kubectl, the kube crate, the node agent) uses to reach the
//! API server.

use std::path::Path;

/// The kubeconfig YAML for a server at `server_url` (e.g. `http://127.0.0.1:6443`).
pub fn render(server_url: &str, cluster_name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster_name}\n  cluster:\n    server: {server_url}\ncontexts:\n- name: {cluster_name}\n  context:\n    cluster: {cluster_name}\n    user: {cluster_name}-admin\n    namespace: default\ncurrent-context: {cluster_name}\nusers:\n- name: {cluster_name}-admin\n  user: {{}}\npreferences: {{}}\n"
    )
}

/// Writes the kubeconfig atomically (temp file then rename), creating parent directories.
pub fn write(path: &Path, server_url: &str, cluster_name: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, render(server_url, cluster_name))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kubeconfig_names_the_server_and_a_current_context() {
        let k = super::render("http://127.0.0.1:7000", "flotilla");
        assert!(k.contains("server: http://127.0.0.1:7000"));
        assert!(k.contains("current-context: flotilla"));
        let v: serde_yaml::Value = serde_yaml::from_str(&k).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "http://127.0.0.1:7000"
        );
    }
}
