//! The delivery service's tables: groups, identity bundles, KeyPackages and pending
//! Welcomes. Functions take the connection or transaction the caller holds, so that
//! each trait method decides what runs in one transaction.

use super::{db, device_i64, device_u64, id_i64, id_u64, parse_user_name};
use crate::store::{GroupRecord, GroupUpdate, KeyPackageStock, StoreError};
use confide_proto::{
    ClaimedKeyPackage, DeviceId, Epoch, IdentityBundle, LogEntry, PendingWelcome, RoomId, Seq,
    Timestamp, UserId, WelcomeId,
};
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};

pub(super) fn init_group(
    tx: &Transaction<'_>,
    room: RoomId,
    group_info: &[u8],
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO groups (room_id, epoch, group_info, seq) VALUES (?1, 0, ?2, 0)",
        params![id_i64(room.0), group_info],
    )?;
    Ok(())
}

/// Moves a room's group to the commit's epoch and queues its Welcome, in the
/// transaction that appends the commit.
pub(super) fn apply_group_update(
    tx: &Transaction<'_>,
    entry: &LogEntry,
    update: &GroupUpdate,
) -> rusqlite::Result<()> {
    let room = id_i64(entry.room.0);
    let seq = id_i64(entry.seq.0);
    tx.execute(
        "INSERT INTO groups (room_id, epoch, group_info, seq) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (room_id) DO UPDATE
         SET epoch = excluded.epoch, group_info = excluded.group_info, seq = excluded.seq",
        params![room, id_i64(update.epoch.0), update.group_info, seq],
    )?;
    let Some(welcome) = &update.welcome else {
        return Ok(());
    };
    // The bytes are stored once, however many devices they wait for.
    tx.execute(
        "INSERT INTO welcome_data (room_id, sender, seq, ts_ms, data)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            room,
            entry.sender.as_str(),
            seq,
            entry.timestamp.0,
            welcome.data
        ],
    )?;
    let data_id = tx.last_insert_rowid();
    let mut insert = tx.prepare_cached(
        "INSERT INTO welcomes (id, data_id, user_id, device) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for recipient in &welcome.recipients {
        insert.execute(params![
            id_i64(recipient.id.0),
            data_id,
            id_i64(recipient.user.0),
            device_i64(recipient.device)
        ])?;
    }
    Ok(())
}

pub(super) fn group(conn: &Connection, room: RoomId) -> Result<Option<GroupRecord>, StoreError> {
    conn.prepare_cached("SELECT epoch, group_info, seq FROM groups WHERE room_id = ?1")
        .and_then(|mut statement| {
            statement.query_row(params![id_i64(room.0)], |row| {
                Ok(GroupRecord {
                    epoch: Epoch(id_u64(row.get(0)?)),
                    group_info: row.get(1)?,
                    seq: Seq(id_u64(row.get(2)?)),
                })
            })
        })
        .optional()
        .map_err(db)
}

pub(super) fn set_identity(
    conn: &Connection,
    user: UserId,
    bundle: &IdentityBundle,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO identities (user_id, identity_key, device_list, signature)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id) DO UPDATE SET identity_key = excluded.identity_key,
             device_list = excluded.device_list, signature = excluded.signature",
        params![
            id_i64(user.0),
            bundle.identity_key,
            bundle.device_list,
            bundle.signature
        ],
    )?;
    Ok(())
}

pub(super) fn identity(
    conn: &Connection,
    user: UserId,
) -> rusqlite::Result<Option<IdentityBundle>> {
    conn.query_row(
        "SELECT identity_key, device_list, signature FROM identities WHERE user_id = ?1",
        params![id_i64(user.0)],
        |row| {
            Ok(IdentityBundle {
                identity_key: row.get(0)?,
                device_list: row.get(1)?,
                signature: row.get(2)?,
            })
        },
    )
    .optional()
}

pub(super) fn key_package_stock(
    conn: &Connection,
    user: UserId,
    device: DeviceId,
) -> rusqlite::Result<KeyPackageStock> {
    conn.query_row(
        "SELECT COALESCE(SUM(last_resort = 0), 0), COALESCE(MAX(last_resort), 0)
         FROM key_packages WHERE user_id = ?1 AND device = ?2",
        params![id_i64(user.0), device_i64(device)],
        |row| {
            Ok(KeyPackageStock {
                one_time: usize::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                last_resort: row.get::<_, i64>(1)? != 0,
            })
        },
    )
}

pub(super) fn add_key_packages(
    tx: &Transaction<'_>,
    user: UserId,
    device: DeviceId,
    one_time: &[Vec<u8>],
    last_resort: Option<&[u8]>,
    max_one_time: usize,
) -> Result<KeyPackageStock, StoreError> {
    let before = key_package_stock(tx, user, device).map_err(db)?;
    if before.one_time + one_time.len() > max_one_time {
        return Err(StoreError::Limit(max_one_time));
    }
    let user = id_i64(user.0);
    let device_value = device_i64(device);
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO key_packages (user_id, device, last_resort, data)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(db)?;
    for package in one_time {
        insert
            .execute(params![user, device_value, 0, package])
            .map_err(db)?;
    }
    if let Some(package) = last_resort {
        tx.execute(
            "DELETE FROM key_packages WHERE user_id = ?1 AND device = ?2 AND last_resort = 1",
            params![user, device_value],
        )
        .map_err(db)?;
        insert
            .execute(params![user, device_value, 1, package])
            .map_err(db)?;
    }
    Ok(KeyPackageStock {
        one_time: before.one_time + one_time.len(),
        last_resort: before.last_resort || last_resort.is_some(),
    })
}

pub(super) fn claim_key_packages(
    tx: &Transaction<'_>,
    user: UserId,
) -> rusqlite::Result<Vec<ClaimedKeyPackage>> {
    let user = id_i64(user.0);
    let devices: Vec<i64> = {
        let mut statement = tx.prepare_cached(
            "SELECT DISTINCT device FROM key_packages WHERE user_id = ?1 ORDER BY device",
        )?;
        statement
            .query_map(params![user], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    let mut claimed = Vec::with_capacity(devices.len());
    let mut pick = tx.prepare_cached(
        "SELECT id, last_resort, data FROM key_packages WHERE user_id = ?1 AND device = ?2
         ORDER BY last_resort, id LIMIT 1",
    )?;
    let mut delete = tx.prepare_cached("DELETE FROM key_packages WHERE id = ?1")?;
    for device in devices {
        let found: Option<(i64, i64, Vec<u8>)> = pick
            .query_row(params![user, device], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        let Some((id, last_resort, package)) = found else {
            continue;
        };
        // One-time packages leave with this transaction; the last-resort one stays.
        if last_resort == 0 {
            delete.execute(params![id])?;
        }
        claimed.push(ClaimedKeyPackage {
            device: device_u64(device),
            package,
        });
    }
    Ok(claimed)
}

pub(super) fn last_welcome_id(conn: &Connection) -> rusqlite::Result<WelcomeId> {
    // AUTOINCREMENT keeps the highest id ever used here, even after it is deleted.
    let last: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'welcomes'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(WelcomeId(last.map_or(0, id_u64)))
}

pub(super) fn welcomes(
    conn: &Connection,
    user: UserId,
    device: DeviceId,
) -> Result<Vec<PendingWelcome>, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT w.id, d.room_id, d.sender, d.seq, d.ts_ms, d.data
             FROM welcomes w JOIN welcome_data d ON d.id = w.data_id
             WHERE w.user_id = ?1 AND w.device = ?2 ORDER BY w.id",
        )
        .map_err(db)?;
    let rows = statement
        .query_map(params![id_i64(user.0), device_i64(device)], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, Vec<u8>>(5)?,
            ))
        })
        .map_err(db)?;
    rows.map(|row| {
        let (id, room, sender, seq, ts, data) = row.map_err(db)?;
        Ok(PendingWelcome {
            id: WelcomeId(id_u64(id)),
            room: RoomId(id_u64(room)),
            sender: parse_user_name(sender)?,
            timestamp: Timestamp(ts),
            seq: Seq(id_u64(seq)),
            data,
        })
    })
    .collect()
}

pub(super) fn delete_welcome(
    tx: &Transaction<'_>,
    user: UserId,
    device: DeviceId,
    id: WelcomeId,
) -> rusqlite::Result<bool> {
    let data_id: Option<i64> = tx
        .query_row(
            "DELETE FROM welcomes WHERE id = ?1 AND user_id = ?2 AND device = ?3
             RETURNING data_id",
            params![id_i64(id.0), id_i64(user.0), device_i64(device)],
            |row| row.get(0),
        )
        .optional()?;
    let Some(data_id) = data_id else {
        return Ok(false);
    };
    tx.execute(
        "DELETE FROM welcome_data WHERE id = ?1
         AND NOT EXISTS (SELECT 1 FROM welcomes WHERE data_id = ?1)",
        params![data_id],
    )?;
    Ok(true)
}
