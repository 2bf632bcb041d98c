//! Command-line surface of `flow`.

use crate::sandbox_cmd::{self, RunOptions};
use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use sandbox::{ProfileName, Waivers};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "flow",
    version,
    about = "Flow runtime: zero-egress flow graphs with local AI"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker in the foreground: spawn, attest and supervise the components.
    Up(UpArgs),
    /// Stop a running broker and every component it started.
    Down,
    /// Show each component's pid, uptime, restarts and attested sandbox state.
    Status(JsonFlag),
    /// Show the capability table: who can talk to whom, with which rights.
    Caps(JsonFlag),
    /// Revoke a capability by id (shuts the channel down).
    Revoke { id: u64 },
    /// Ping the reasoning worker from the executor over its capability.
    Ping {
        #[arg(long, default_value_t = 1000)]
        count: u32,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long)]
        json: bool,
    },
    /// Check what this machine offers the sandbox, and how to fix what is missing.
    Doctor(JsonFlag),
    /// Inspect or try the sandbox profiles.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run a flow file (TOML or JSON): streams AI output, ends with a per-node summary.
    Run {
        flow: PathBuf,
        /// Value for an input node: ID=VALUE (repeatable).
        #[arg(long = "input", value_name = "ID=VALUE")]
        input: Vec<String>,
        /// One JSON document at the end instead of live output.
        #[arg(long)]
        json: bool,
    },
    /// Runs in the spool.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// The model store.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// The managed llama-server binary.
    #[command(subcommand)]
    Llama(LlamaCommand),
    /// The effective settings and the enterprise policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Change a setting of the running broker.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Credentials of service connections, kept in the OS keyring.
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Measurements behind the README's figures (see bench/kernel.sh).
    #[command(subcommand, hide = true)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs (newest last).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one run's summary and output files.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a run.
    Rm { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Models in the store.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Import a model file (air-gapped installs); its digest must match the catalog.
    Import { file: PathBuf },
    /// Re-hash stored models against the catalog.
    Verify { id: Option<String> },
    /// Remove a model: ID or ID@VERSION.
    Rm { model: String },
    /// Download a model from the Model Hub (hub.enabled, hub.url): ID or
    /// ID@VERSION. Verified against a trusted catalog digest; an interrupted
    /// download resumes when run again.
    Pull {
        model: String,
        /// One JSON document at the end instead of a progress bar.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum LlamaCommand {
    /// Install a llama-server binary (built by deploy/install-llama.sh) and
    /// record its sha256; the broker checks it before every spawn.
    Install { binary: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Sandboxed spawn to attested, and bwrap --unshare-all, in one run.
    Spawn {
        #[arg(long, default_value_t = 200)]
        count: u32,
    },
    /// Raw socketpair ping-pong between two pinned processes.
    RawPingpong {
        #[arg(long, default_value_t = 100_000)]
        count: u32,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        cpu_a: usize,
        #[arg(long, default_value_t = 1)]
        cpu_b: usize,
    },
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Waive a sandbox layer that another layer covers (only `landlock`).
    /// Shown in `flow status` and in every audit record while set.
    #[arg(long = "waive", value_name = "LAYER")]
    pub waive: Vec<String>,
    /// Set a setting for this broker: KEY=VALUE (repeatable). A key the
    /// enterprise policy locks keeps the policy's value; the attempt is
    /// reported and audited.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    crate::policy::parse_set_arg(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Each effective setting with its value, source and lock, and whether
    /// the egress gateway runs (no broker needed).
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Change KEY in the running broker until it stops (refused if the
    /// enterprise policy locks it).
    Set { key: String, value: String },
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Store the credential of connection NAME (a service catalog entry):
    /// read from a prompt, or from standard input when it is not a
    /// terminal; never from the command line.
    Add { name: String },
    /// Connections with their origin, and whether the credential is present.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove the credential of connection NAME.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Run CMD under a production profile (no broker needed), for your own escape tests.
    Run {
        #[arg(long)]
        profile: String,
        /// Read/write directory for the executor profile (default: the user's spool).
        #[arg(long)]
        spool: Option<PathBuf>,
        /// Extra file or directory visible read-only (llama-server: the model).
        #[arg(long = "read", value_name = "PATH")]
        read: Vec<PathBuf>,
        /// Extra directory visible read-write (llama-server: its socket directory).
        #[arg(long = "write-dir", value_name = "DIR")]
        write_dir: Vec<PathBuf>,
        /// Print what was applied (filter hash, landlock rules, namespaces) on stderr.
        #[arg(long)]
        report: bool,
        #[arg(long = "waive", value_name = "LAYER")]
        waive: Vec<String>,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Print a profile for auditors: syscall allowlist, landlock rules, namespaces, hashes.
    Show {
        #[arg(long)]
        profile: String,
        /// Include the exec allowance used by `flow sandbox run`.
        #[arg(long)]
        exec: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain; names the first bad record.
    Verify {
        /// Audit log to verify (default: the user's).
        path: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn parse_profile(s: &str) -> anyhow::Result<ProfileName> {
    match ProfileName::parse(s) {
        Some(p) => Ok(p),
        None => bail!(
            "unknown profile '{s}': use one of {}",
            ProfileName::ALL.map(|p| p.as_str()).join(", ")
        ),
    }
}

pub fn parse_waivers(list: &[String]) -> anyhow::Result<Waivers> {
    let mut w = Waivers::default();
    for l in list {
        match l.as_str() {
            "landlock" => w.landlock = true,
            other => bail!(
                "layer '{other}' cannot be waived: only 'landlock' may be (seccomp, no_new_privs and the namespaces are never waivable)"
            ),
        }
    }
    Ok(w)
}

pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Sandbox(SandboxCommand::Run {
            profile,
            spool,
            read,
            write_dir,
            report,
            waive,
            command,
        }) => {
            let profile = parse_profile(&profile)?;
            let spool = match (profile, spool) {
                (ProfileName::Executor, None) => {
                    let paths = crate::paths::Paths::from_env()?;
                    Some(crate::paths::prepare_spool(
                        &paths,
                        sandbox::profile::DEFAULT_RUN_AS,
                    )?)
                }
                (_, s) => s,
            };
            let mut write_dirs: Vec<PathBuf> = spool.into_iter().collect();
            write_dirs.extend(write_dir);
            let opts = RunOptions {
                profile,
                command,
                read_paths: read,
                write_dirs,
                waivers: parse_waivers(&waive)?,
                report,
            };
            Ok(sandbox_cmd::run(&opts)?)
        }
        Command::Sandbox(SandboxCommand::Show {
            profile,
            exec,
            json,
        }) => {
            let profile = parse_profile(&profile)?;
            let d = sandbox::describe(profile, exec);
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", sandbox_cmd::render_description(&d));
            }
            Ok(0)
        }
        Command::Up(args) => {
            let waivers = parse_waivers(&args.waive)?;
            crate::daemon::run(waivers, &args.set)
        }
        Command::Policy(PolicyCommand::Show { json }) => crate::policy_cmd::show(json),
        Command::Settings(SettingsCommand::Set { key, value }) => {
            crate::policy_cmd::settings_set(&key, &value)
        }
        Command::Connections(ConnectionsCommand::Add { name }) => {
            crate::connections_cmd::add(&name)
        }
        Command::Connections(ConnectionsCommand::List { json }) => {
            crate::connections_cmd::list(json)
        }
        Command::Connections(ConnectionsCommand::Rm { name }) => crate::connections_cmd::rm(&name),
        Command::Doctor(f) => crate::doctor::run(f.json),
        Command::Audit(AuditCommand::Verify { path, json }) => {
            crate::client::audit_verify(path, json)
        }
        Command::Down => crate::client::down(),
        Command::Run { flow, input, json } => crate::run_cmd::run(&flow, &input, json),
        Command::Runs(RunsCommand::List { json }) => crate::run_cmd::runs_list(json),
        Command::Runs(RunsCommand::Show { id, json }) => crate::run_cmd::runs_show(&id, json),
        Command::Runs(RunsCommand::Rm { id }) => crate::run_cmd::runs_rm(&id),
        Command::Llama(LlamaCommand::Install { binary }) => crate::run_cmd::llama_install(&binary),
        Command::Models(ModelsCommand::List { json }) => crate::run_cmd::models_list(json),
        Command::Models(ModelsCommand::Import { file }) => crate::run_cmd::models_import(&file),
        Command::Models(ModelsCommand::Verify { id }) => crate::run_cmd::models_verify(id),
        Command::Models(ModelsCommand::Rm { model }) => crate::run_cmd::models_rm(&model),
        Command::Models(ModelsCommand::Pull { model, json }) => {
            crate::run_cmd::models_pull(&model, json)
        }
        Command::Bench(BenchCommand::Spawn { count }) => crate::bench::spawn(count),
        Command::Bench(BenchCommand::RawPingpong {
            count,
            size,
            cpu_a,
            cpu_b,
        }) => crate::bench::raw_pingpong(count, size, (cpu_a, cpu_b)),
        Command::Status(f) => crate::client::status(f.json),
        Command::Caps(f) => crate::client::caps(f.json),
        Command::Revoke { id } => crate::client::revoke(id),
        Command::Ping { count, size, json } => crate::client::ping(count, size, json),
    }
}
