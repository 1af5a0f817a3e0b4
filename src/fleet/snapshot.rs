//! The fleet snapshot: the whole store in one compact value, written at a clean shutdown and read
//! at the next start instead of decoding every agent row (100,000 rows take a few hundred
//! milliseconds through SQLite; the snapshot, tens).
//!
//! The file counts only while the database's `fleet_snapshot` row names its generation, and the
//! database drops that row whenever an agent row changes, so a snapshot that counts always
//! matches the table (see the migration). A snapshot this version does not understand, or one that
//! does not decode, is ignored: the fleet is then read from the table.
//!
//! Layout (little-endian): magic, the 16-byte generation, then three tables of the values agents share — texts (versions,
//! addresses, reasons, errors, and the enum names), health check sets and domain lists, both as
//! JSON — then one record per agent in name order, referring to the tables by index. Shared values
//! are therefore decoded once, not once per agent.

use super::health::{Health, Status};
use super::store::{OptI64, Shared, Slot, Slots};
use super::{count_version, Inner};
use crate::protocol::HealthCheck;
use std::collections::HashMap;

/// Bump when the layout or the meaning of a field changes: older snapshots are then ignored.
pub const FORMAT: i64 = 2;
const MAGIC: &[u8; 8] = b"HSFLEET\0";
/// A reference to no value (an absent optional text).
const NONE: u32 = u32::MAX;

/// Writes the snapshot of the fleet to `out` and returns its length. Call with the queues empty
/// (after the final flush), so the snapshot is exactly what the table holds.
///
/// Two walks over the fleet: the first collects the shared values, which the header holds before
/// any record; the second writes the records through a [`WINDOW`]-sized buffer. The snapshot (21 MB
/// at 100,000 agents) is never in memory whole.
pub(super) fn write(
    inner: &Inner,
    generation: &[u8; 16],
    out: &mut impl std::io::Write,
) -> std::io::Result<u64> {
    // In name order when the index is current, so the next start's sort finds it sorted.
    let in_order = || -> Box<dyn Iterator<Item = &Slot>> {
        if inner.by_name_fresh {
            Box::new(inner.by_name.iter().filter_map(|e| inner.slots.get(e.idx)))
        } else {
            Box::new(inner.slots.iter().map(|(_, slot)| slot))
        }
    };
    let mut dictionary = Dictionary::default();
    let mut scratch = Vec::with_capacity(1024);
    let mut count: u32 = 0;
    for slot in in_order() {
        dictionary.record(slot, &mut scratch);
        scratch.clear();
        count += 1;
    }
    let mut buf = Vec::with_capacity(WINDOW + 1024);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(generation);
    for table in [&dictionary.texts, &dictionary.checks, &dictionary.domains] {
        put_u32(&mut buf, table.values.len() as u32);
        for value in &table.values {
            put_str(&mut buf, value);
        }
    }
    put_u32(&mut buf, count);
    let mut written = 0;
    for slot in in_order() {
        // Every value is in the dictionary already: the same indices as in the first walk.
        dictionary.record(slot, &mut buf);
        if buf.len() >= WINDOW {
            out.write_all(&buf)?;
            written += buf.len() as u64;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    Ok(written + buf.len() as u64)
}

/// The values records refer to by index, collected as records are encoded.
#[derive(Default)]
struct Dictionary {
    texts: Table,
    checks: Table,
    domains: Table,
    /// Check sets and domain lists are interned, so each distinct one is turned into JSON once and
    /// then found by its address.
    checks_at: HashMap<usize, u32>,
    domains_at: HashMap<usize, u32>,
}

impl Dictionary {
    /// Appends `slot`'s record to `r`, adding the values it refers to.
    fn record(&mut self, slot: &Slot, r: &mut Vec<u8>) {
        r.extend_from_slice(slot.id.as_bytes());
        r.extend_from_slice(&slot.credential_hash);
        match &slot.tls_pin {
            Some(pin) => {
                r.push(1);
                r.extend_from_slice(pin);
            }
            None => r.push(0),
        }
        put_str(r, &slot.machine_name);
        for text in [
            Some(&*slot.external_ip),
            slot.listen_addr.as_deref(),
            Some(&*slot.version),
            Some(slot.extension.as_str()),
            Some(slot.environment.as_str()),
            Some(slot.status.as_str()),
            Some(slot.health.as_str()),
            Some(&*slot.health_reason),
            slot.last_poll_error.as_deref(),
        ] {
            put_u32(r, text.map_or(NONE, |t| self.texts.index(t)));
        }
        let checks = &mut self.checks;
        let check_set = *self.checks_at.entry(slot.checks.addr()).or_insert_with(|| {
            checks.index(&serde_json::to_string(&*slot.checks).unwrap_or_else(|_| "[]".into()))
        });
        put_u32(r, check_set);
        let domains = &mut self.domains;
        let domain_list = *self
            .domains_at
            .entry(slot.domains.addr())
            .or_insert_with(|| {
                domains
                    .index(&serde_json::to_string(&*slot.domains).unwrap_or_else(|_| "[]".into()))
            });
        put_u32(r, domain_list);
        for n in [
            slot.registered_at,
            slot.last_contact_at,
            slot.status_since,
            slot.health_since,
            slot.last_heartbeat_at.get().unwrap_or(i64::MIN),
            slot.last_poll_at.get().unwrap_or(i64::MIN),
            slot.uptime_seconds.get().unwrap_or(i64::MIN),
            slot.enrollment_token_id.get().unwrap_or(i64::MIN),
            i64::from(slot.liveness_id),
        ] {
            r.extend_from_slice(&n.to_le_bytes());
        }
        put_u32(r, slot.console_token_generation);
        put_u32(r, slot.heartbeat_interval_seconds);
    }
}

/// Decodes a snapshot of `len` bytes from `source` into a fresh store (with the name order
/// built), or says why it cannot. `generation` is the one the database recorded with it: any other
/// file is stale. The bytes are read a window at a time (see [`Reader`]), never held whole.
pub(super) fn decode(
    source: impl std::io::Read + Send,
    len: u64,
    generation: &[u8],
) -> Result<Inner, String> {
    let mut r = Reader::new(source, len);
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a fleet snapshot".into());
    }
    if r.take(16)? != generation {
        return Err("the snapshot is not the one the database recorded (stale)".into());
    }
    let mut inner = Inner::default();
    let texts: Vec<Shared<String>> = (0..r.u32()?)
        .map(|_| Ok(inner.pools.texts.intern(r.str()?)))
        .collect::<Result<_, String>>()?;
    let checks: Vec<Shared<Vec<HealthCheck>>> = (0..r.u32()?)
        .map(|_| {
            let parsed: Vec<HealthCheck> =
                serde_json::from_str(r.str()?).map_err(|e| format!("health checks: {e}"))?;
            Ok(inner.pools.checks.intern(&parsed))
        })
        .collect::<Result<_, String>>()?;
    let domains: Vec<Shared<Vec<Box<str>>>> = (0..r.u32()?)
        .map(|_| {
            let parsed: Vec<Box<str>> =
                serde_json::from_str(r.str()?).map_err(|e| format!("domains: {e}"))?;
            Ok(inner.pools.domains.intern(&parsed))
        })
        .collect::<Result<_, String>>()?;
    let count = r.u32()? as usize;
    // Bounded by what the bytes can hold, so a corrupt count cannot reserve gigabytes.
    inner.slots = Slots::with_capacity(count.min(usize::try_from(len / 100).unwrap_or(usize::MAX)));
    let tables = Tables {
        texts: &texts,
        checks: &checks,
        domains: &domains,
    };
    // Two threads: this one enters agents into the store's lookup tables (random memory access)
    // while another parses the records that follow, so a start at 100,000 agents uses both cores.
    let (r, per_version) = std::thread::scope(|scope| {
        let (batches, received) = std::sync::mpsc::sync_channel::<Vec<Slot>>(4);
        let parser = scope.spawn(move || {
            let mut per_version = vec![0usize; tables.texts.len()];
            let mut batch = Vec::with_capacity(BATCH);
            for _ in 0..count {
                let (slot, version) = record(&mut r, &tables)?;
                per_version[version] += 1;
                batch.push(slot);
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    if batches.send(full).is_err() {
                        break;
                    }
                }
            }
            let _ = batches.send(batch);
            Ok::<_, String>((r, per_version))
        });
        for batch in received {
            for slot in batch {
                inner.slots.push_loaded(slot);
            }
        }
        parser
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    let trailing = r.rest()?;
    if trailing > 0 {
        return Err(format!("{trailing} bytes after the last agent"));
    }
    for (version, agents) in texts.iter().zip(per_version) {
        if agents > 0 {
            count_version(&mut inner.versions, version, agents as isize);
        }
    }
    inner.rebuild_name_order();
    Ok(inner)
}

/// Agents parsed per hand-over between the two decoding threads: 60 KiB of records, under the
/// size from which each block would get (and fault in) its own mapping (see `crate::malloc`).
const BATCH: usize = 256;

/// The shared values the records refer to by index.
#[derive(Clone, Copy)]
struct Tables<'t> {
    texts: &'t [Shared<String>],
    checks: &'t [Shared<Vec<HealthCheck>>],
    domains: &'t [Shared<Vec<Box<str>>>],
}

impl Tables<'_> {
    fn text(&self, i: u32) -> Result<&Shared<String>, String> {
        self.texts
            .get(i as usize)
            .ok_or_else(|| format!("text {i} out of range"))
    }

    fn optional(&self, i: u32) -> Result<Option<Shared<String>>, String> {
        (i != NONE).then(|| self.text(i).cloned()).transpose()
    }
}

/// One agent's record, and the index of its version among the texts.
fn record(r: &mut Reader<impl std::io::Read>, t: &Tables<'_>) -> Result<(Slot, usize), String> {
    let id = uuid::Uuid::from_bytes(r.array()?);
    let credential_hash = r.array()?;
    let tls_pin = match r.u8()? {
        0 => None,
        1 => Some(r.array()?),
        other => return Err(format!("pin flag {other}")),
    };
    let machine_name: Box<str> = r.str()?.into();
    let external_ip = t.text(r.u32()?)?.clone();
    let listen_addr = t.optional(r.u32()?)?;
    let version_index = r.u32()?;
    let version = t.text(version_index)?.clone();
    let extension = t.text(r.u32()?)?.parse()?;
    let environment = t.text(r.u32()?)?.parse()?;
    let status = Status::parse(t.text(r.u32()?)?).ok_or("unknown status")?;
    let health = Health::parse(t.text(r.u32()?)?).ok_or("unknown health")?;
    let health_reason = t.text(r.u32()?)?.clone();
    let last_poll_error = t.optional(r.u32()?)?;
    let checks = t
        .checks
        .get(r.u32()? as usize)
        .ok_or("check set out of range")?
        .clone();
    let domains = t
        .domains
        .get(r.u32()? as usize)
        .ok_or("domain list out of range")?
        .clone();
    let slot = Slot {
        id,
        credential_hash,
        tls_pin,
        machine_name,
        listen_addr,
        last_poll_error,
        domains,
        version,
        external_ip,
        health_reason,
        checks,
        registered_at: r.i64()?,
        last_contact_at: r.i64()?,
        status_since: r.i64()?,
        health_since: r.i64()?,
        last_heartbeat_at: optional_number(r.i64()?),
        last_poll_at: optional_number(r.i64()?),
        uptime_seconds: optional_number(r.i64()?),
        enrollment_token_id: optional_number(r.i64()?),
        liveness_id: u32::try_from(r.i64()?).map_err(|_| "liveness id out of range")?,
        console_token_generation: r.u32()?,
        heartbeat_interval_seconds: r.u32()?,
        name_pos: u32::MAX,
        extension,
        environment,
        status,
        health,
        dirty: false,
        beating: false,
    };
    Ok((slot, version_index as usize))
}

fn optional_number(n: i64) -> OptI64 {
    (n != i64::MIN).then_some(n).into()
}

/// Distinct values in first-seen order, each with its index.
#[derive(Default)]
struct Table {
    values: Vec<String>,
    index: HashMap<String, u32>,
}

impl Table {
    fn index(&mut self, value: &str) -> u32 {
        if let Some(&i) = self.index.get(value) {
            return i;
        }
        let i = self.values.len() as u32;
        self.values.push(value.to_string());
        self.index.insert(value.to_string(), i);
        i
    }
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// A bounds-checked cursor: a truncated or corrupt snapshot is an error, never a panic.
/// Reads the snapshot through a window of [`WINDOW`] bytes, refilled as the fields are taken:
/// the file (21 MB at 100,000 agents, a third of the memory goal) is never in memory whole, and
/// fields are still parsed in place, with no copy each. Every field is short (the longest a
/// machine name of at most 255 bytes, or a table entry), so refills are rare.
struct Reader<R> {
    source: R,
    window: Vec<u8>,
    /// The next byte to take, and the end of what the window holds.
    at: usize,
    end: usize,
    /// Where `window[0]` is in the file, and the file's length.
    offset: u64,
    len: u64,
}

/// Bytes read or written at a time: large enough that refills and writes cost nothing, small
/// enough not to count.
const WINDOW: usize = 256 * 1024;

impl<R: std::io::Read> Reader<R> {
    fn new(source: R, len: u64) -> Self {
        Reader {
            source,
            window: vec![0; WINDOW],
            at: 0,
            end: 0,
            offset: 0,
            len,
        }
    }

    /// Where the next byte is in the file.
    fn position(&self) -> u64 {
        self.offset + self.at as u64
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.end - self.at < n {
            self.refill(n)?;
        }
        let slice = &self.window[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    /// Moves what is left to the front of the window and reads until it holds `n` bytes.
    #[cold]
    fn refill(&mut self, n: usize) -> Result<(), String> {
        // Checked against the file's length first, so a corrupt length cannot grow the window.
        if self.position().saturating_add(n as u64) > self.len {
            return Err(format!("truncated at byte {}", self.position()));
        }
        self.window.copy_within(self.at..self.end, 0);
        self.offset += self.at as u64;
        self.end -= self.at;
        self.at = 0;
        if self.window.len() < n {
            self.window.resize(n, 0);
        }
        while self.end < n {
            let read = self
                .source
                .read(&mut self.window[self.end..])
                .map_err(|e| format!("reading byte {}: {e}", self.offset + self.end as u64))?;
            if read == 0 {
                // Moving the window left the field's position as it was.
                return Err(format!("truncated at byte {}", self.position()));
            }
            self.end += read;
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn str(&mut self) -> Result<&str, String> {
        let len = self.u32()? as usize;
        let at = self.position();
        std::str::from_utf8(self.take(len)?).map_err(|_| format!("text at byte {at} is not UTF-8"))
    }

    /// How many bytes follow the last one taken.
    fn rest(mut self) -> Result<u64, String> {
        let buffered = (self.end - self.at) as u64;
        std::io::copy(&mut self.source, &mut std::io::sink())
            .map(|more| buffered + more)
            .map_err(|e| format!("reading past the last agent: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Agent;
    use crate::protocol::{CheckStatus, Environment, Extension};

    fn fleet() -> Inner {
        let mut inner = Inner::default();
        for (i, name) in ["beta", "Alpha", "gamma"].into_iter().enumerate() {
            let mut agent = Agent::new_enrolled(
                &format!("credential-{i}"),
                name.into(),
                "192.0.2.7".into(),
                "1.2.3",
                Extension::OnPremisesAppProvisioning,
                Environment::UsGovernment,
                5,
                (i == 0).then_some([9; 32]),
                1_000 + i as i64,
            );
            // Keys as enrollment gives them; the largest one the console holds among them.
            agent.liveness_id = [41, 42, u32::MAX][i];
            if i == 1 {
                agent.listen_addr = Some("0.0.0.0:8443".into());
                agent.last_poll_error = Some("connection refused".into());
                agent.domains = vec!["corp.example.test".into(), "Ü.example".into()];
                agent.checks = vec![HealthCheck {
                    name: "ldap".into(),
                    status: CheckStatus::Fail,
                    message: "down, \"quoted\"".into(),
                }];
                agent.last_heartbeat_at = Some(2_000);
                agent.uptime_seconds = Some(0);
                agent.health = Health::Unhealthy;
                agent.health_reason = "check ldap failing: down".into();
                agent.status = Status::Inactive;
            }
            inner.insert(&agent);
        }
        inner.rebuild_name_order();
        inner
    }

    /// The snapshot's bytes, as the file holds them.
    fn encode(inner: &Inner, generation: &[u8; 16]) -> Vec<u8> {
        let mut bytes = Vec::new();
        let len = write(inner, generation, &mut bytes).expect("writing to a Vec");
        assert_eq!(bytes.len() as u64, len);
        bytes
    }

    fn decode_bytes(bytes: &[u8], generation: &[u8]) -> Result<Inner, String> {
        decode(bytes, bytes.len() as u64, generation)
    }

    fn views(inner: &Inner) -> Vec<String> {
        let mut all: Vec<String> = inner
            .slots
            .iter()
            .map(|(_, s)| format!("{:?}", s.to_agent()))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn a_snapshot_decodes_to_the_same_fleet_in_name_order() {
        let inner = fleet();
        let Ok(decoded) = decode_bytes(&encode(&inner, &GEN), &GEN) else {
            panic!("the snapshot does not decode");
        };
        assert_eq!(views(&decoded), views(&inner));
        let names: Vec<&str> = decoded
            .by_name
            .iter()
            .map(|e| &*decoded.slots.get(e.idx).unwrap().machine_name)
            .collect();
        assert_eq!(names, ["Alpha", "beta", "gamma"]);
        assert_eq!(decoded.versions.values().sum::<usize>(), 3);
        let (_, with_pin) = decoded
            .slots
            .iter()
            .find(|(_, s)| &*s.machine_name == "beta")
            .unwrap();
        assert_eq!(with_pin.tls_pin, Some([9; 32]));
        assert!(decoded
            .slots
            .find_credential(&crate::auth::tokens::digest_array("credential-2"))
            .is_some());
    }

    const GEN: [u8; 16] = [3; 16];

    /// A source that hands out at most 7 bytes per read, so that nearly every field needs a refill
    /// that moves a partial field to the front of the window.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_snapshot_read_in_small_pieces_decodes_the_same() {
        let inner = fleet();
        let bytes = encode(&inner, &GEN);
        let Ok(decoded) = decode(Trickle(&bytes), bytes.len() as u64, &GEN) else {
            panic!("the snapshot does not decode");
        };
        assert_eq!(views(&decoded), views(&inner));
    }

    #[test]
    fn a_file_shorter_than_its_length_said_is_refused() {
        let bytes = encode(&fleet(), &GEN);
        let half = &bytes[..bytes.len() / 2];
        let err = decode(Trickle(half), bytes.len() as u64, &GEN)
            .err()
            .unwrap();
        assert!(err.starts_with("truncated at byte"), "{err}");
    }

    #[test]
    fn a_snapshot_of_another_generation_is_stale() {
        let bytes = encode(&fleet(), &GEN);
        assert!(decode_bytes(&bytes, &[4; 16])
            .err()
            .unwrap()
            .contains("stale"));
    }

    #[test]
    fn truncated_or_corrupt_snapshots_are_refused_without_panicking() {
        let bytes = encode(&fleet(), &GEN);
        for len in 0..bytes.len() {
            assert!(
                decode_bytes(&bytes[..len], &GEN).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_bytes(&longer, &GEN)
            .err()
            .unwrap()
            .contains("after the last agent"));
        let mut bad_magic = bytes.clone();
        bad_magic[0] = b'X';
        assert_eq!(
            decode_bytes(&bad_magic, &GEN).err().unwrap(),
            "not a fleet snapshot"
        );
        // Every single-byte corruption either decodes or is refused; none panics.
        for i in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0xff;
            let _ = decode_bytes(&corrupt, &GEN);
        }
    }
}
