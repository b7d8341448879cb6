//! A small load measurement until `confide-bench` exists: N clients in the lobby of a
//! real in-process server (TLS, SQLite with durable commits), each pipelining M
//! messages. Reports acknowledged messages per second and deliveries per second (the
//! sum over receivers). Run with `cargo run --release -p confide-testkit --example
//! burst -- CLIENTS MESSAGES BYTES`.

use confide_proto::{Event, Reply, Request, Target};
use confide_testkit::TestServer;
use confide_testkit::raw::random_nonce;
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|arg| arg.parse())
        .collect::<Result<_, _>>()?;
    let clients = args.first().copied().unwrap_or(10);
    let messages = args.get(1).copied().unwrap_or(1000);
    let bytes = args.get(2).copied().unwrap_or(200);
    let server = TestServer::start_with(|config| config.limits.outbound_queue = 1 << 16).await?;
    let mut connected = Vec::new();
    for index in 0..clients {
        let mut client = server.raw().await?;
        client.register(&format!("load{index}")).await?;
        connected.push(client);
    }
    let lobby = connected[0].lobby().await?;
    let total = clients * messages;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut client in connected {
        tasks.push(tokio::spawn(async move {
            let body = vec![b'x'; bytes];
            let mut ids = Vec::with_capacity(messages);
            for _ in 0..messages {
                let request = Request::Send {
                    target: Target::Room(lobby),
                    nonce: random_nonce(),
                    body: body.clone(),
                };
                ids.push(client.send_request(request).await?);
            }
            for id in ids {
                match client.response(id).await? {
                    Ok(Reply::Sent { .. }) => {}
                    other => anyhow::bail!("unexpected {other:?}"),
                }
            }
            let acked = started.elapsed();
            let mut received = 0;
            while received < total {
                if let Event::Entry(_) = client.next_event(confide_testkit::TIMEOUT).await? {
                    received += 1;
                }
            }
            Ok::<_, anyhow::Error>((acked, received))
        }));
    }
    let mut slowest_ack = std::time::Duration::ZERO;
    let mut delivered = 0;
    for task in tasks {
        let (acked, received) = task.await??;
        slowest_ack = slowest_ack.max(acked);
        delivered += received;
    }
    let elapsed = started.elapsed();
    println!(
        "{clients} clients x {messages} messages of {bytes} B: {total} stored in {:.2} s ({:.0} msg/s acknowledged), \
         {delivered} deliveries in {:.2} s ({:.0} deliveries/s)",
        slowest_ack.as_secs_f64(),
        total as f64 / slowest_ack.as_secs_f64(),
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
