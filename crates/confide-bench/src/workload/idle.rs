//! The idle workload: C connections logged in and doing nothing; what does each cost
//! the server in memory?
//!
//! For Confide the accounts are created first, on connections that close at once, and
//! the server's memory is read after that; then C connections log in with their
//! session tokens and sit idle, and the growth is divided by C. So the figure is the
//! cost of a connection, not of an account in the database. For the relay the
//! connections simply join the one group.

use super::Ctx;
use super::crowd::{self, Entry};
use super::plan::{Everyone, Plan};
use crate::client::{Session, user_name};
use crate::procfs;
use crate::report::{RunReport, format_bytes};
use crate::server::TargetKind;
use anyhow::{Context as _, Result, anyhow};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// Traffic (logins announced to everyone online) must be still this long before the
/// idle period starts.
const SETTLE: Duration = Duration::from_millis(500);

/// Runs the idle workload.
///
/// # Errors
/// If the connections cannot be set up.
pub async fn run(ctx: &mut Ctx) -> Result<RunReport> {
    let spec = ctx.spec.clone();
    let kind = ctx.target.kind;
    let connections = spec.users;
    let mut report = RunReport::new(spec.workload, kind, connections, spec.body_bytes);
    report.connections = connections;
    let plan: Arc<dyn Plan> = Arc::new(Everyone { users: connections });

    ctx.warm_up().await?;
    let baseline = ctx.target.sample()?;
    let mut reference = baseline;
    let entry = match kind {
        TargetKind::Confide => {
            let started = Instant::now();
            let tokens = create_accounts(ctx, connections).await?;
            report.notes.push(format!(
                "{connections} accounts created in {:.1} s; server RSS {} before, {} after",
                started.elapsed().as_secs_f64(),
                format_bytes(baseline.rss_bytes as f64),
                format_bytes(ctx.target.sample()?.rss_bytes as f64),
            ));
            tokio::time::sleep(Duration::from_millis(300)).await;
            reference = ctx.target.sample()?;
            Entry::Resume(Arc::new(tokens))
        }
        TargetKind::Relay => Entry::Lobby,
    };

    let bench_before = procfs::sample_self()?;
    let setup_started = Instant::now();
    let mut crowd = crowd::connect(ctx, 0..connections, &entry, &plan).await?;
    report.setup_seconds = setup_started.elapsed().as_secs_f64();
    let settle_started = Instant::now();
    if !crowd::settle(&ctx.frames, SETTLE, ctx.measure_deadline()).await {
        report
            .notes
            .push("login traffic had not settled when the idle period started".to_owned());
    }
    report.notes.push(format!(
        "login traffic: {} frames, settled {:.1} s after the last login",
        ctx.frames.load(Ordering::Relaxed),
        settle_started.elapsed().as_secs_f64(),
    ));
    let server_before = ctx.target.sample()?;
    let idle_end = (Instant::now() + spec.idle_for).min(ctx.measure_deadline());
    tokio::time::sleep_until(idle_end).await;
    let server_after = ctx.target.sample()?;
    let bench_after = procfs::sample_self()?;
    let alive = crowd
        .members
        .iter()
        .filter(|member| !member.progress.ended.load(Ordering::Relaxed))
        .count();
    // How connections ended so far; the ones the bench drops after this are not news.
    report.server_disconnects = ctx.target.disconnect_reasons();
    crowd::stop_readers(&mut crowd.members).await?;

    report.measured_seconds = spec.idle_for.as_secs_f64();
    report.connections_lost = connections as u64 - alive as u64;
    report.server_cpu_seconds = (server_after.cpu_seconds - server_before.cpu_seconds).max(0.0);
    report.server_rss_bytes = server_after.rss_bytes;
    report.server_peak_rss_bytes = server_after.peak_rss_bytes;
    report.server_baseline_rss_bytes = reference.rss_bytes;
    if connections > 0 {
        report.rss_per_connection_bytes = Some(
            server_after.rss_bytes.saturating_sub(reference.rss_bytes) as f64
                / f64::from(connections),
        );
        report.notes.push(format!(
            "bench RSS {} ({} per connection)",
            format_bytes(bench_after.rss_bytes as f64),
            format_bytes(
                bench_after.rss_bytes.saturating_sub(bench_before.rss_bytes) as f64
                    / f64::from(connections)
            ),
        ));
    }
    report.notes.push(format!(
        "server CPU while idle: {:.3} s over {:.1} s",
        report.server_cpu_seconds,
        spec.idle_for.as_secs_f64()
    ));
    report.bench_rss_bytes = bench_after.rss_bytes;
    report.bench_cpu_seconds = (bench_after.cpu_seconds - bench_before.cpu_seconds).max(0.0);
    Ok(report)
}

/// Registers users `0..count` on connections that close right after, with bounded
/// parallelism; returns their session tokens by index.
pub(super) async fn create_accounts(
    ctx: &Ctx,
    count: u32,
) -> Result<Vec<confide_proto::SessionToken>> {
    let tls = ctx.tls.clone().context("no TLS configuration")?;
    let limit = Arc::new(tokio::sync::Semaphore::new(
        ctx.settings.connect_parallelism.max(1),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let limit = Arc::clone(&limit);
        let tls = tls.clone();
        let addr = ctx.target.addr;
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|err| anyhow!(err))?;
            let mut session = Session::connect(addr, &tls).await?;
            let token = session
                .register(&user_name(index))
                .await
                .with_context(|| format!("registering {}", user_name(index)))?;
            session.close().await;
            Ok::<_, anyhow::Error>((index, token))
        });
    }
    let mut tokens = vec![None; count as usize];
    let deadline = ctx.measure_deadline();
    while let Some(joined) = tokio::time::timeout_at(deadline, tasks.join_next())
        .await
        .map_err(|_| anyhow!("creating the accounts took longer than the run allows"))?
    {
        let (index, token) = joined.context("a register task failed")??;
        if let Some(slot) = tokens.get_mut(index as usize) {
            *slot = Some(token);
        }
    }
    tokens
        .into_iter()
        .map(|token| token.context("an account was not created"))
        .collect()
}
