//! RFC 4533 content synchronization in refreshOnly mode: OpenLDAP's `syncprov` overlay tells,
//! from a cookie, what changed and what was deleted, so a delta cycle does not have to list every
//! object to find deletions.
//!
//! The responses are parsed here rather than with ldap3's parsers, which panic on a malformed
//! value; a malformed message from the server is an error of the cycle, never a crash.

use super::conn::Connection;
use super::error::{from_ldap, from_result, rc, Doing};
use super::DirectoryError;
use ldap3::asn1::{parse_tag, StructureTag, TagClass, Types, PL};
use ldap3::controls::{MakeCritical, RefreshMode, SyncRequest};
use ldap3::{ResultEntry, Scope, SearchEntry};

const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";

/// The server asks for a full reload: the cookie is too old for its session log and it cannot
/// compute a present phase either (`e-syncRefreshRequired`).
const SYNC_REFRESH_REQUIRED: u32 = 4096;

/// Whether a content-sync search failed because a saved cookie is of no use any more: a full
/// reload is required, or the database no longer offers content sync (syncprov removed).
pub fn cookie_unusable(e: &DirectoryError) -> bool {
    matches!(
        e.rc(),
        Some(SYNC_REFRESH_REQUIRED | rc::UNAVAILABLE_CRITICAL_EXTENSION | rc::UNWILLING_TO_PERFORM)
    )
}

/// One message of a refreshOnly search.
#[derive(Debug)]
pub enum SyncItem {
    /// An entry added or modified since the cookie, with the requested attributes.
    Changed(SearchEntry),
    /// Entries unchanged since the cookie, named in a present phase (raw entryUUIDs).
    Present(Vec<Vec<u8>>),
    /// Entries deleted (or no longer matching) since the cookie, by raw entryUUID.
    Deleted(Vec<Vec<u8>>),
}

/// How a refreshOnly search ended.
#[derive(Debug, PartialEq, Default)]
pub struct SyncEnd {
    /// The cookie to start the next search from.
    pub cookie: Option<Vec<u8>>,
    /// True when deletions were sent explicitly; false after a present phase, where whatever was
    /// neither changed nor present is gone.
    pub refresh_deletes: bool,
    /// Whether any present message came (a present phase, whatever the final flag says).
    pub saw_present: bool,
}

pub struct SyncStream {
    stream: ldap3::SearchStream<'static, String, Vec<String>>,
    doing: Doing,
    end: SyncEnd,
}

impl Connection {
    /// A refreshOnly content-sync search from `cookie` (none: everything, and a cookie for later).
    /// The request control is critical, so a database without syncprov refuses it (LDAP result
    /// 12) instead of ignoring it.
    pub async fn sync_stream(
        &mut self,
        base: &str,
        filter: &str,
        attrs: Vec<String>,
        cookie: Option<Vec<u8>>,
        what: &str,
    ) -> Result<SyncStream, DirectoryError> {
        let doing = self.doing(what, base);
        let control = SyncRequest {
            mode: RefreshMode::RefreshOnly,
            cookie,
            reload_hint: false,
        }
        .critical();
        let stream = self
            .ldap_mut()
            .with_controls(control)
            .streaming_search(base, Scope::Subtree, filter, attrs)
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        Ok(SyncStream {
            stream,
            doing,
            end: SyncEnd::default(),
        })
    }

    /// The directory's current sync cookie, from a content-sync search that matches nothing.
    /// None when the server does not offer content sync for `base`.
    pub async fn sync_cookie(&mut self, base: &str) -> Option<Vec<u8>> {
        let mut stream = self
            .sync_stream(
                base,
                "(entryUUID=00000000-0000-0000-0000-000000000000)",
                vec!["1.1".into()],
                None,
                "read the directory's sync cookie",
            )
            .await
            .ok()?;
        loop {
            match stream.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => return stream.end().cookie,
                Err(_) => return None,
            }
        }
    }
}

impl SyncStream {
    /// The next message, or None at the end (after checking the result code; then see [`end`]).
    ///
    /// [`end`]: SyncStream::end
    pub async fn next(&mut self) -> Result<Option<SyncItem>, DirectoryError> {
        loop {
            let Some(entry) = self
                .stream
                .next()
                .await
                .map_err(|e| from_ldap(e, &self.doing))?
            else {
                let result = self.stream.finish().await;
                if result.rc != 0 {
                    return Err(from_result(result.rc, &result.text, &self.doing));
                }
                if let Some(done) = result
                    .ctrls
                    .iter()
                    .find(|c| c.1.ctype == SYNC_DONE_OID)
                    .and_then(|c| c.1.val.as_deref())
                {
                    let (cookie, refresh_deletes) = parse_sync_done(done)
                        .ok_or_else(|| self.malformed("the Sync Done control"))?;
                    if cookie.is_some() {
                        self.end.cookie = cookie;
                    }
                    self.end.refresh_deletes = refresh_deletes;
                }
                return Ok(None);
            };
            if entry.is_ref() {
                continue;
            }
            if entry.is_intermediate() {
                match parse_sync_info(&entry)
                    .ok_or_else(|| self.malformed("a Sync Info message"))?
                {
                    SyncInfo::Cookie(cookie) => self.end.cookie = Some(cookie),
                    SyncInfo::Ids {
                        cookie,
                        refresh_deletes,
                        uuids,
                    } => {
                        if let Some(cookie) = cookie {
                            self.end.cookie = Some(cookie);
                        }
                        if refresh_deletes {
                            return Ok(Some(SyncItem::Deleted(uuids)));
                        }
                        self.end.saw_present = true;
                        return Ok(Some(SyncItem::Present(uuids)));
                    }
                    SyncInfo::Phase { cookie } => {
                        if let Some(cookie) = cookie {
                            self.end.cookie = Some(cookie);
                        }
                    }
                }
                continue;
            }
            let state = entry
                .1
                .iter()
                .find(|c| c.1.ctype == SYNC_STATE_OID)
                .and_then(|c| c.1.val.as_deref())
                .map(parse_sync_state);
            let Some(Some((state, uuid, cookie))) = state else {
                return Err(self.malformed("an entry's Sync State control"));
            };
            if let Some(cookie) = cookie {
                self.end.cookie = Some(cookie);
            }
            return Ok(Some(match state {
                0 => {
                    self.end.saw_present = true;
                    SyncItem::Present(vec![uuid])
                }
                3 => SyncItem::Deleted(vec![uuid]),
                _ => SyncItem::Changed(SearchEntry::construct(entry)),
            }));
        }
    }

    /// How the search ended; meaningful once [`next`](SyncStream::next) returned None.
    pub fn end(&mut self) -> SyncEnd {
        std::mem::take(&mut self.end)
    }

    fn malformed(&self, what: &str) -> DirectoryError {
        from_result(
            2,
            &format!("the server sent a malformed value in {what}"),
            &self.doing,
        )
    }
}

/// A raw entryUUID as OpenLDAP writes it in text: lowercase 8-4-4-4-12 hex.
pub fn uuid_text(raw: &[u8]) -> Option<String> {
    if raw.len() != 16 {
        return None;
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

enum SyncInfo {
    Cookie(Vec<u8>),
    /// refreshDelete or refreshPresent: the end of a phase.
    Phase {
        cookie: Option<Vec<u8>>,
    },
    Ids {
        cookie: Option<Vec<u8>>,
        refresh_deletes: bool,
        uuids: Vec<Vec<u8>>,
    },
}

fn tag_of(bytes: &[u8]) -> Option<StructureTag> {
    parse_tag(bytes).ok().map(|(_, tag)| tag)
}

fn primitive(tag: StructureTag) -> Option<Vec<u8>> {
    match tag.payload {
        PL::P(bytes) => Some(bytes),
        PL::C(_) => None,
    }
}

fn constructed(tag: StructureTag) -> Option<Vec<StructureTag>> {
    match tag.payload {
        PL::C(children) => Some(children),
        PL::P(_) => None,
    }
}

fn is_universal(tag: &StructureTag, ty: Types) -> bool {
    tag.class == TagClass::Universal && tag.id == ty as u64
}

fn boolean(tag: StructureTag) -> Option<bool> {
    primitive(tag).and_then(|b| b.first().map(|v| *v != 0))
}

/// syncStateValue ::= SEQUENCE { state ENUMERATED, entryUUID OCTET STRING, cookie OCTET STRING OPTIONAL }
fn parse_sync_state(value: &[u8]) -> Option<(u8, Vec<u8>, Option<Vec<u8>>)> {
    let mut parts = constructed(tag_of(value)?)?.into_iter();
    let state = parts
        .next()
        .filter(|t| is_universal(t, Types::Enumerated))?;
    let state = match primitive(state)?.as_slice() {
        [v] if *v <= 3 => *v,
        _ => return None,
    };
    let uuid = primitive(
        parts
            .next()
            .filter(|t| is_universal(t, Types::OctetString))?,
    )?;
    let cookie = match parts.next() {
        Some(t) if is_universal(&t, Types::OctetString) => Some(primitive(t)?),
        Some(_) => return None,
        None => None,
    };
    Some((state, uuid, cookie))
}

/// syncDoneValue ::= SEQUENCE { cookie OCTET STRING OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE }
fn parse_sync_done(value: &[u8]) -> Option<(Option<Vec<u8>>, bool)> {
    let mut cookie = None;
    let mut refresh_deletes = false;
    for part in constructed(tag_of(value)?)? {
        if is_universal(&part, Types::OctetString) {
            cookie = Some(primitive(part)?);
        } else if is_universal(&part, Types::Boolean) {
            refresh_deletes = boolean(part)?;
        } else {
            return None;
        }
    }
    Some((cookie, refresh_deletes))
}

/// The Sync Info intermediate response: responseName [0] and responseValue [1], a CHOICE of
/// newcookie [0], refreshDelete [1], refreshPresent [2] and syncIdSet [3].
fn parse_sync_info(entry: &ResultEntry) -> Option<SyncInfo> {
    let parts = match &entry.0.payload {
        PL::C(parts) => parts.clone(),
        PL::P(_) => return None,
    };
    let mut name = None;
    let mut value = None;
    for part in parts {
        match part.id {
            0 => name = primitive(part),
            1 => value = primitive(part),
            _ => {}
        }
    }
    if name.as_deref() != Some(SYNC_INFO_OID.as_bytes()) {
        return None;
    }
    let choice = tag_of(&value?)?;
    if choice.class != TagClass::Context {
        return None;
    }
    match choice.id {
        0 => Some(SyncInfo::Cookie(primitive(choice)?)),
        1 | 2 => {
            let mut cookie = None;
            for part in constructed(choice)? {
                if is_universal(&part, Types::OctetString) {
                    cookie = Some(primitive(part)?);
                }
            }
            Some(SyncInfo::Phase { cookie })
        }
        3 => {
            let mut cookie = None;
            let mut refresh_deletes = false;
            let mut uuids = Vec::new();
            for part in constructed(choice)? {
                if is_universal(&part, Types::OctetString) {
                    cookie = Some(primitive(part)?);
                } else if is_universal(&part, Types::Boolean) {
                    refresh_deletes = boolean(part)?;
                } else if is_universal(&part, Types::Set) {
                    for uuid in constructed(part)? {
                        uuids.push(primitive(uuid)?);
                    }
                } else {
                    return None;
                }
            }
            Some(SyncInfo::Ids {
                cookie,
                refresh_deletes,
                uuids,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    #[test]
    fn sync_done_as_slapd_sends_it() {
        // From `ldapsearch -E sync=ro` against slapd 2.5: cookie, refreshDeletes TRUE.
        let value =
            b64("MDkENHJpZD0wMDAsY3NuPTIwMjYxMTMwMDI0MDI0Ljg0NjQ2N1ojMDAwMDAwIzAwMCMwMDAwMDABAf8=");
        let (cookie, deletes) = parse_sync_done(&value).unwrap();
        assert_eq!(
            cookie.as_deref(),
            Some(&b"rid=000,csn=20261130024024.846467Z#000000#000#000000"[..])
        );
        assert!(deletes);
        // An empty sequence: no cookie, refreshDeletes FALSE by default.
        assert_eq!(parse_sync_done(&[0x30, 0x00]), Some((None, false)));
    }

    #[test]
    fn sync_state_as_slapd_sends_it() {
        let value = b64("MBUKAQEEECGaWGKAsxBBiIIRoSYcgpY=");
        let (state, uuid, cookie) = parse_sync_state(&value).unwrap();
        assert_eq!(state, 1, "add");
        assert_eq!(
            uuid_text(&uuid).unwrap(),
            "219a5862-80b3-1041-8882-11a1261c8296"
        );
        assert_eq!(cookie, None);
    }

    #[test]
    fn malformed_values_are_refused_not_panicking() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x03, 0x0a, 0x01, 0x09],       // state 9
            &[0x30, 0x03, 0x04, 0x01, 0x00],       // no state
            &[0x04, 0x02, 0x00, 0x00],             // not a sequence
            &[0x30, 0x05, 0x0a, 0x01, 0x01, 0x30], // truncated
        ] {
            assert_eq!(parse_sync_state(bad), None, "{bad:?}");
        }
        assert_eq!(parse_sync_done(&[0x30, 0x03, 0x02, 0x01, 0x01]), None);
        assert_eq!(uuid_text(&[1, 2, 3]), None);
    }
}
