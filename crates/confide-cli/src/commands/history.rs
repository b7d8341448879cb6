//! `history`: the recent entries of a room or conversation, oldest first.
//!
//! Fetches pages backwards until the limit; prints with day separators (or JSON
//! lines). It must not change the profile's room positions: reading history is not
//! catching up.

use super::{Context, print_out, resolve_target};
use crate::cli::HistoryArgs;
use crate::output::{Human, RoomDirectory, json};
use confide_client::Entry;

/// Most entries asked for per request.
const PAGE: u32 = 200;

/// `confide history (--room ROOM | --to USER) [--limit N]`.
///
/// # Errors
/// If not logged in, the room is unknown, or the server refuses.
pub async fn history(context: &Context, args: HistoryArgs) -> anyhow::Result<()> {
    let (client, events) = context.connect(false).await?;
    drop(events);
    let result = async {
        let mut directory = RoomDirectory::new();
        let (room, _place) = resolve_target(&client, &mut directory, &args.target).await?;
        let mut pages: Vec<Vec<Entry>> = Vec::new();
        let mut remaining = args.limit;
        let mut before = None;
        while remaining > 0 {
            let page = client.history(room, before, remaining.min(PAGE)).await?;
            let Some(first) = page.entries.first() else {
                break;
            };
            before = Some(first.seq);
            let got = u32::try_from(page.entries.len()).unwrap_or(u32::MAX);
            remaining = remaining.saturating_sub(got);
            let more = page.more;
            pages.push(page.entries);
            if !more {
                break;
            }
        }
        // Receipts mark earlier messages; they are not lines of the history.
        let entries: Vec<Entry> = pages
            .into_iter()
            .rev()
            .flatten()
            .filter(|entry| !entry.is_receipt())
            .collect();
        if context.json {
            for entry in &entries {
                print_out(json::entry(&directory, entry, false))?;
            }
        } else {
            let human = Human {
                tz: chrono::Local,
                show_room: false,
            };
            for line in human.history(&directory, &entries) {
                print_out(line)?;
            }
        }
        Ok(())
    }
    .await;
    client.close().await;
    result
}
