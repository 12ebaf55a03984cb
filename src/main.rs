//! The `wharf` binary: Unit-compatible command line, logging, start-up order and signals.
//!
//! Start-up order matters: the stored config (then `--config`, if given) is validated and
//! applied before the control socket opens, so a client that connects always sees the
//! state the server actually runs.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use wharf::config::validate::ConfigValidator;
use wharf::control::{ControlAddress, ControlListener};
use wharf::controller::Controller;
use wharf::drain;
use wharf::http::ConnectionStats;
use wharf::listeners::Listeners;
use wharf::log_file::LogFile;
use wharf::privileges::{self, Identity};
use wharf::process_title;
use wharf::runtime::Runtime;
use wharf::store::Store;
use wharf::watch;

/// A WebAssembly application server that speaks NGINX Unit's control API.
#[derive(Debug, Parser)]
#[command(name = "wharf", version, about, disable_version_flag = true)]
struct Cli {
    /// Print the version; on stderr also the lines Unit's tools read from `unitd --version`
    #[arg(short = 'V', long)]
    version: bool,
    /// Control API address: unix:/path, ip:port or [ipv6]:port [default: unix:STATEDIR/control.sock]
    #[arg(long, value_name = "ADDRESS")]
    control: Option<ControlAddress>,
    /// Mode of the control socket file, in octal
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_mode)]
    control_mode: u32,
    /// Directory for the committed config, its history and caches
    #[arg(
        long,
        value_name = "DIR",
        default_value = DEFAULT_STATEDIR,
        alias = "state"
    )]
    statedir: PathBuf,
    /// Write the log to FILE (appending) instead of stderr
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Write the process id to FILE
    #[arg(long, value_name = "FILE")]
    pid: Option<PathBuf>,
    /// Accepted for unitd compatibility; Wharf always stays in the foreground
    #[arg(long)]
    no_daemon: bool,
    /// Directory for temporary files
    #[arg(long, value_name = "DIR")]
    tmpdir: Option<PathBuf>,
    /// Accepted for unitd compatibility; has no effect
    #[arg(long, value_name = "DIR", alias = "modules")]
    modulesdir: Option<PathBuf>,
    /// Started as root, run as this user (keeping only the right to bind ports below 1024)
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// With --user, run with this group [default: the user's primary group]
    #[arg(long, value_name = "GROUP", requires = "user")]
    group: Option<String>,
    /// Owner of the control socket file
    #[arg(long, value_name = "USER")]
    control_user: Option<String>,
    /// Group of the control socket file
    #[arg(long, value_name = "GROUP")]
    control_group: Option<String>,
    /// Apply and commit this config file at startup; a bad file stops the server
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Size bound of the compiled-module cache in STATEDIR/compiled, in MiB; 0 turns it off
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    module_cache_size: u64,
    /// On SIGQUIT, how long requests in flight may take to finish before Wharf exits
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    drain_timeout: u64,
}

const DEFAULT_STATEDIR: &str = "wharf-state";
/// How long a graceful stop waits, after the drain, for the telemetry spans still queued
/// to reach the collector.
const TELEMETRY_FLUSH_BOUND: Duration = Duration::from_secs(5);

impl Cli {
    /// Where the control API listens: `--control`, or a socket in the state dir.
    fn control_address(&self) -> ControlAddress {
        self.control
            .clone()
            .unwrap_or_else(|| default_control(&self.statedir))
    }
}

fn default_control(statedir: &Path) -> ControlAddress {
    ControlAddress::Unix(statedir.join("control.sock"))
}

// Request handling allocates many small, short-lived objects across threads; mimalloc
// does that markedly cheaper than glibc's allocator (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("`{text}` is not an octal file mode such as 0600"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.version {
        print_version();
        return std::process::ExitCode::SUCCESS;
    }
    let log_file = match init_logging(cli.log.as_deref()) {
        Ok(log_file) => log_file,
        Err(e) => {
            eprintln!("wharf: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Before any thread exists (see `process_title::set`).
    if let Err(e) = process_title::set(&title(&cli)) {
        tracing::warn!(
            "the process title was not set, so Unit's tools will not find this server: {e}"
        );
    }
    // Before any thread exists: credentials and capabilities are per thread, and the
    // runtimes' threads inherit the main thread's.
    if let Err(e) = run_as_user(&cli) {
        tracing::error!("{e:#}");
        eprintln!("wharf: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    // Guests and data-plane connections run on their own multi-threaded runtime; the
    // control API keeps its own, so a busy data plane never delays reconfiguration.
    let data_plane = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("wharf-data")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wharf: failed to start the data-plane runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let control_plane = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wharf-control")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wharf: failed to start the control runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let handle = data_plane.handle().clone();
    let result = control_plane.block_on(run(cli, handle, log_file));
    control_plane.shutdown_timeout(std::time::Duration::from_secs(5));
    data_plane.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("wharf: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `wharf --version`: Wharf's own line on stdout, and on stderr the two lines unitd
/// prints there, with the built-in defaults as its `./configure` options.
fn print_version() {
    println!("wharf {}", env!("CARGO_PKG_VERSION"));
    let statedir = Path::new(DEFAULT_STATEDIR);
    eprint!(
        "{}",
        process_title::version_lines(&[
            ("statedir", statedir.display().to_string()),
            ("control", default_control(statedir).to_string()),
        ])
    );
}

/// Unit's main process title for this server: the control address and state dir it
/// uses, as absolute paths so a tool in another directory reaches them, then the rest
/// of the command line as given.
fn title(cli: &Cli) -> String {
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let control = match cli.control_address() {
        ControlAddress::Unix(path) => ControlAddress::Unix(absolute(&path)),
        tcp @ ControlAddress::Tcp(_) => tcp,
    };
    let mut args = std::env::args_os();
    let argv0 = args
        .next()
        .map(|arg| arg.to_string_lossy().into_owned())
        .unwrap_or_else(|| "wharf".to_owned());
    let rest: Vec<_> = args.collect();
    // `--state` is what Unit's tools read; Wharf takes it as an alias of `--statedir`.
    let mut flags = vec![
        "--control".to_owned(),
        control.to_string(),
        "--state".to_owned(),
        absolute(&cli.statedir).display().to_string(),
    ];
    flags.extend(process_title::without_options(
        &rest,
        &["control", "statedir", "state"],
    ));
    process_title::title(&argv0, &flags)
}

/// `--user`/`--group`: prepares the state dir for that user (creating it owned by them
/// if it is missing), then drops to them.
fn run_as_user(cli: &Cli) -> anyhow::Result<()> {
    let Some(user) = &cli.user else {
        return Ok(());
    };
    let identity = Identity::resolve(user, cli.group.as_deref())?;
    if !cli.statedir.exists() {
        std::fs::create_dir_all(&cli.statedir).with_context(|| {
            format!(
                "failed to create the state dir `{}`",
                cli.statedir.display()
            )
        })?;
        std::os::unix::fs::chown(&cli.statedir, Some(identity.uid), Some(identity.gid))
            .with_context(|| format!("failed to give `{}` to {user}", cli.statedir.display()))?;
    }
    privileges::drop_to(&identity)?;
    tracing::info!(user = %identity.user, uid = identity.uid, gid = identity.gid, "running as");
    Ok(())
}

/// The owner and group `--control-user` and `--control-group` give the socket file.
fn control_owner(cli: &Cli) -> anyhow::Result<(Option<u32>, Option<u32>)> {
    let uid = match &cli.control_user {
        Some(user) => Some(privileges::user_ids(user)?.0),
        None => None,
    };
    let gid = match &cli.control_group {
        Some(group) => Some(privileges::group_id(group)?),
        None => None,
    };
    Ok((uid, gid))
}

/// Sets up the log; with `--log`, returns the file for `SIGUSR1` to reopen.
fn init_logging(log: Option<&Path>) -> anyhow::Result<Option<Arc<LogFile>>> {
    let filter = EnvFilter::try_from_env("WHARF_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log {
        Some(path) => {
            let file = Arc::new(LogFile::open(path)?);
            let writer = Arc::clone(&file);
            builder
                .with_ansi(false)
                .with_writer(move || writer.writer())
                .init();
            Ok(Some(file))
        }
        None => {
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .init();
            Ok(None)
        }
    }
}

async fn run(
    cli: Cli,
    data_plane: tokio::runtime::Handle,
    log_file: Option<Arc<LogFile>>,
) -> anyhow::Result<()> {
    // Installed first: until a handler is in place, these signals' default action ends
    // the process, and a client may send one as soon as the control socket answers.
    let mut reopen = signal(SignalKind::user_defined1())?;
    let shutdown = ShutdownSignals::install()?;
    std::fs::create_dir_all(&cli.statedir).with_context(|| {
        format!(
            "failed to create the state dir `{}`",
            cli.statedir.display()
        )
    })?;
    if let Some(tmpdir) = &cli.tmpdir {
        anyhow::ensure!(
            tmpdir.is_dir(),
            "the tmpdir `{}` is not a directory",
            tmpdir.display()
        );
    }
    let store = Store::open(&cli.statedir)?;
    let runtime = Arc::new(if cli.module_cache_size == 0 {
        Runtime::new()?
    } else {
        let bound = cli.module_cache_size.saturating_mul(1 << 20);
        Runtime::with_artifact_cache(&cli.statedir.join("compiled"), bound)?
    });
    let stats = Arc::new(ConnectionStats::default());
    let listeners = Listeners::new(data_plane, Arc::clone(&stats));
    let controller = Controller::start(store, ConfigValidator::new()?, runtime, listeners).await?;
    if let Some(path) = &cli.config {
        let body = std::fs::read(path)
            .with_context(|| format!("failed to read the config file `{}`", path.display()))?;
        let source = path.display().to_string();
        controller
            .apply_startup_config(&source, &body)
            .await
            .with_context(|| format!("the config file `{source}` was not applied"))?;
    }

    tokio::spawn(watch::run(Arc::downgrade(&controller)));

    let (owner, group) = control_owner(&cli)?;
    let address = cli.control_address();
    let listener = ControlListener::bind(&address, cli.control_mode, owner, group)?;
    let socket_path = listener.socket_path().map(Path::to_path_buf);
    let server = listener.serve(Arc::clone(&controller), Arc::clone(&stats))?;
    tracing::info!(%address, "controller started");
    if let Some(pid) = &cli.pid {
        std::fs::write(pid, format!("{}\n", std::process::id()))
            .with_context(|| format!("failed to write the pid file `{}`", pid.display()))?;
    }

    let logs = Arc::clone(&controller);
    tokio::spawn(async move {
        while reopen.recv().await.is_some() {
            tracing::info!("SIGUSR1 received, reopening the logs");
            if let Some(log) = &log_file
                && let Err(e) = log.reopen()
            {
                tracing::error!(
                    "failed to reopen the log file `{}`: {e}",
                    log.path().display()
                );
            }
            logs.current().running.reopen_access_log();
        }
    });

    let mut shutdown = shutdown;
    let stop = shutdown.received().await;
    // Listeners close at once in both cases, so new connections are refused.
    server.stop().await;
    controller.shut_down().await;
    if stop == Stop::Graceful {
        let bound = Duration::from_secs(cli.drain_timeout);
        tracing::info!(
            connections = stats.active.get(),
            "SIGQUIT received: listeners closed, letting requests in flight finish (up to {bound:?})"
        );
        tokio::select! {
            open = drain::until_connections_close(&stats, bound) => if open > 0 {
                tracing::warn!(connections = open, "drain timeout reached, closing what is left");
            },
            again = shutdown.received() => {
                tracing::info!("{} received while draining, exiting now", again.name());
            }
        }
        controller.flush_telemetry(TELEMETRY_FLUSH_BOUND).await;
    } else {
        tracing::info!("{} received, exiting", stop.name());
    }
    if let Some(path) = socket_path {
        let _ = std::fs::remove_file(path);
    }
    if let Some(pid) = &cli.pid {
        let _ = std::fs::remove_file(pid);
    }
    tracing::info!("stopped");
    Ok(())
}

/// How a signal asks Wharf to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM or SIGINT (named): at once, as unitd does; requests in flight are cut.
    Fast(&'static str),
    /// SIGQUIT: stop accepting, let the requests in flight finish, then exit.
    Graceful,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Self::Fast(name) => name,
            Self::Graceful => "SIGQUIT",
        }
    }
}

/// The signals that stop Wharf.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// Waits for the next of them.
    async fn received(&mut self) -> Stop {
        tokio::select! {
            _ = self.term.recv() => Stop::Fast("SIGTERM"),
            _ = self.int.recv() => Stop::Fast("SIGINT"),
            _ = self.quit.recv() => Stop::Graceful,
        }
    }
}
