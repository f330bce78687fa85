//! `flotilla image`: push Wasm files and OCI image layouts to the cluster's registry (or any
//! registry), and list what the registry holds.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use flotilla_node::image::PullSecrets;
use flotilla_node::image::push::{self, Progress, PushOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where the cluster's registry is when nothing says otherwise (the API server's default).
const DEFAULT_SERVER: &str = "http://127.0.0.1:6443";
/// Pushes smaller than this finish too fast for a progress bar to help.
const BAR_THRESHOLD: u64 = 1 << 20;

/// `flotilla image`.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// The `flotilla image` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Push a .wasm file (as a CNCF Wasm OCI artifact) or an OCI image layout (a directory or a
    /// tar of one) as NAME:TAG; prints the manifest digest.
    Push(PushArgs),
    /// List the repositories and tags the registry holds.
    Ls(LsArgs),
}

/// Which registry to talk to, and how.
#[derive(clap::Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Registry to use instead of the cluster's (`host:port`, `http://host:port`, `https://...`).
    #[arg(long)]
    pub registry: Option<String>,
    /// The cluster's API server, which serves its registry (default: from the kubeconfig).
    #[arg(long, env = "FLOTILLA_SERVER")]
    pub server: Option<String>,
    /// Kubeconfig to read the API server address from (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Registry hosts to reach over plain HTTP (loopback hosts always are).
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// User name for registries that require one (with --password or $FLOTILLA_REGISTRY_PASSWORD).
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    /// Password for --username.
    #[arg(long, env = "FLOTILLA_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// `flotilla image push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// A .wasm file, an OCI image layout directory, or a tar (optionally gzipped) of one.
    pub source: PathBuf,
    /// The image reference, e.g. `hello:v1` (cluster registry) or `host:port/team/app:v2`.
    pub reference: String,
    /// The registry to push to.
    #[command(flatten)]
    pub target: RegistryArgs,
    /// Show no progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `flotilla image ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// The registry to list.
    #[command(flatten)]
    pub target: RegistryArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Output formats of `flotilla image ls`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// One line per repository: name and tags.
    Table,
    /// `[{"name": .., "tags": [..]}]`.
    Json,
}

/// Runs `flotilla image ...`.
pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Push(args) => push_command(args).await,
        ImageCommand::Ls(args) => ls_command(args).await,
    }
}

async fn push_command(args: PushArgs) -> anyhow::Result<()> {
    let options = options(&args.target)?;
    let is_wasm = is_wasm_file(&args.source)
        .with_context(|| format!("cannot read {}", args.source.display()))?;
    let bar = Bar::new(args.quiet);
    let pushed = if is_wasm {
        push::push_wasm(&args.source, &args.reference, &options, &bar).await
    } else {
        push::push_layout(&args.source, &args.reference, &options, &bar).await
    };
    bar.0.finish_and_clear();
    let pushed = pushed?;
    eprintln!(
        "pushed {} ({} uploaded, {} blob{} already present)",
        pushed.reference,
        human_bytes(pushed.uploaded),
        pushed.skipped,
        if pushed.skipped == 1 { "" } else { "s" },
    );
    println!("{}", pushed.digest);
    Ok(())
}

async fn ls_command(args: LsArgs) -> anyhow::Result<()> {
    let options = options(&args.target)?;
    let registry = options
        .default_registry
        .clone()
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let repositories = push::list(&registry, &options).await?;
    match args.output {
        OutputFormat::Json => {
            let json: Vec<_> = repositories
                .iter()
                .map(|r| serde_json::json!({"name": r.name, "tags": r.tags}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        OutputFormat::Table => {
            let width = repositories
                .iter()
                .map(|r| r.name.len())
                .max()
                .unwrap_or(0)
                .max(10);
            println!("{:<width$}  TAGS", "REPOSITORY");
            for repository in &repositories {
                println!("{:<width$}  {}", repository.name, repository.tags.join(","));
            }
        }
    }
    Ok(())
}

/// The push/list options: the registry from the flags, the API server or the kubeconfig.
fn options(args: &RegistryArgs) -> anyhow::Result<PushOptions> {
    let registry = match (&args.registry, &args.server) {
        (Some(registry), _) => registry.clone(),
        (None, Some(server)) => server.clone(),
        (None, None) => server_from_kubeconfig(args.kubeconfig.as_deref())?
            .unwrap_or_else(|| DEFAULT_SERVER.to_string()),
    };
    let mut credentials = PullSecrets::default();
    if let (Some(username), Some(password)) = (&args.username, &args.password) {
        let (host, _) = flotilla_node::image::parse_registry(&registry);
        credentials.add_basic(&host, username, password);
    }
    Ok(PushOptions {
        default_registry: Some(registry),
        insecure: args.insecure_registries.clone(),
        credentials,
    })
}

/// The API server URL of the kubeconfig's current context (or its first cluster); `None` when
/// there is no kubeconfig.
pub fn server_from_kubeconfig(path: Option<&Path>) -> anyhow::Result<Option<String>> {
    let path = match path {
        Some(path) => path.to_path_buf(),
        None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            // Only the first file of a KUBECONFIG list is read.
            Some(list) => std::env::split_paths(&list).next().unwrap_or_default(),
            None => match dirs::home_dir() {
                Some(home) => home.join(".kube/config"),
                None => return Ok(None),
            },
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let config: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a kubeconfig", path.display()))?;
    Ok(server_of(&config))
}

/// `clusters[<current context's cluster>].cluster.server`, else `clusters[0].cluster.server`.
fn server_of(config: &serde_yaml::Value) -> Option<String> {
    let clusters = config.get("clusters")?.as_sequence()?;
    let current_cluster = config
        .get("current-context")
        .and_then(|c| c.as_str())
        .and_then(|current| {
            config
                .get("contexts")?
                .as_sequence()?
                .iter()
                .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(current))?
                .get("context")?
                .get("cluster")?
                .as_str()
        });
    let cluster = current_cluster
        .and_then(|name| {
            clusters
                .iter()
                .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(name))
        })
        .or_else(|| clusters.first())?;
    cluster
        .get("cluster")?
        .get("server")?
        .as_str()
        .map(str::to_string)
}

/// A file starting with `\0asm` is pushed as Wasm; anything else as an image layout.
fn is_wasm_file(path: &Path) -> std::io::Result<bool> {
    if path.is_dir() {
        return Ok(false);
    }
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path)?;
    let n = file.read(&mut magic)?;
    Ok(n == 4 && magic == *b"\0asm")
}

fn human_bytes(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// An indicatif bar on stderr, shown for large pushes on a terminal.
struct Bar(ProgressBar);

impl Bar {
    fn new(quiet: bool) -> Bar {
        let bar = ProgressBar::hidden();
        if !quiet && std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        Bar(bar)
    }
}

impl Progress for Bar {
    fn begin(&self, total: u64) {
        if total < BAR_THRESHOLD {
            self.0.set_draw_target(ProgressDrawTarget::hidden());
        }
        self.0.set_length(total);
        self.0.set_style(
            ProgressStyle::with_template(
                "{spinner} pushing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        self.0.enable_steady_tick(Duration::from_millis(100));
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_comes_from_the_current_context_or_the_first_cluster() {
        let config: serde_yaml::Value = serde_yaml::from_str(
            "clusters:\n- name: a\n  cluster: {server: 'http://127.0.0.1:6443'}\n- name: b\n  cluster: {server: 'https://b:6443'}\ncontexts:\n- name: ctx\n  context: {cluster: b}\ncurrent-context: ctx\n",
        )
        .unwrap();
        assert_eq!(server_of(&config).as_deref(), Some("https://b:6443"));
        let config: serde_yaml::Value = serde_yaml::from_str(
            "clusters:\n- name: a\n  cluster: {server: 'http://127.0.0.1:6443'}\n",
        )
        .unwrap();
        assert_eq!(server_of(&config).as_deref(), Some("http://127.0.0.1:6443"));
        assert_eq!(server_of(&serde_yaml::Value::Null), None);
    }
}
