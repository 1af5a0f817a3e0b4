//! Active Directory delegation over plain LDAP: reads the domain root's DACL (binary
//! `nTSecurityDescriptor`, MS-DTYP §2.4.6), adds the provisioning agents' ACEs, writes it back.
//!
//! Done over LDAP with the LDAP_SERVER_SD_FLAGS control (DACL only) rather than with
//! `samba-tool dsacl` or `dsacls.exe`, so it works against any AD, from any machine.

use uuid::Uuid;

/// LDAP_SERVER_SD_FLAGS_OID: read or write only the parts of the security descriptor named.
pub const SD_FLAGS_OID: &str = "1.2.840.113556.1.4.801";
/// `SEQUENCE { INTEGER 4 }`: DACL_SECURITY_INFORMATION only. Writing just the DACL needs no
/// right to change the owner or the SACL.
pub const SD_FLAGS_DACL: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x04];

const SE_DACL_PRESENT: u16 = 0x0004;
const SE_SELF_RELATIVE: u16 = 0x8000;
const ACL_REVISION_DS: u8 = 4;
const INHERITED_ACE: u8 = 0x10;
const CONTAINER_INHERIT_ACE: u8 = 0x02;
const INHERIT_ONLY_ACE: u8 = 0x08;
const ACCESS_ALLOWED_ACE_TYPE: u8 = 0x00;
const ACCESS_ALLOWED_OBJECT_ACE_TYPE: u8 = 0x05;
const ACE_OBJECT_TYPE_PRESENT: u32 = 0x1;
const ACE_INHERITED_OBJECT_TYPE_PRESENT: u32 = 0x2;

const RIGHT_DS_READ: u32 = 0x0002_0094; // READ_CONTROL | LIST_CHILDREN | READ_PROPERTY | LIST_OBJECT
const RIGHT_DS_WRITE_PROPERTY: u32 = 0x20;
const RIGHT_DS_CONTROL_ACCESS: u32 = 0x100;

/// Schema and extended-right GUIDs (the same in every AD forest).
pub const USER_CLASS: &str = "bf967aba-0de6-11d0-a285-00aa003049e2";
pub const RESET_PASSWORD: &str = "00299570-246d-11d0-a768-00aa006e0529";
pub const UNEXPIRE_PASSWORD: &str = "ccc2dc7d-a6ad-4a7a-8846-c04e3cc53501";
pub const LOCKOUT_TIME: &str = "28630ebf-41d5-11d1-a9c1-0000f80367c1";
pub const PWD_LAST_SET: &str = "bf967a0a-0de6-11d0-a285-00aa003049e2";

/// The ACEs granted to the agents' group on the domain root, as in Entra's gMSA delegation for
/// password writeback: read everything; Reset Password, write lockoutTime and pwdLastSet on
/// descendant users; Unexpire Password on the domain.
pub fn agent_aces(sid: &[u8]) -> Vec<Vec<u8>> {
    vec![
        ace(
            ACCESS_ALLOWED_ACE_TYPE,
            CONTAINER_INHERIT_ACE,
            RIGHT_DS_READ,
            None,
            None,
            sid,
        ),
        ace(
            ACCESS_ALLOWED_OBJECT_ACE_TYPE,
            CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE,
            RIGHT_DS_CONTROL_ACCESS,
            Some(RESET_PASSWORD),
            Some(USER_CLASS),
            sid,
        ),
        ace(
            ACCESS_ALLOWED_OBJECT_ACE_TYPE,
            CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE,
            RIGHT_DS_WRITE_PROPERTY,
            Some(LOCKOUT_TIME),
            Some(USER_CLASS),
            sid,
        ),
        ace(
            ACCESS_ALLOWED_OBJECT_ACE_TYPE,
            CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE,
            RIGHT_DS_WRITE_PROPERTY,
            Some(PWD_LAST_SET),
            Some(USER_CLASS),
            sid,
        ),
        ace(
            ACCESS_ALLOWED_OBJECT_ACE_TYPE,
            0,
            RIGHT_DS_CONTROL_ACCESS,
            Some(UNEXPIRE_PASSWORD),
            None,
            sid,
        ),
    ]
}

fn guid(text: &str) -> [u8; 16] {
    Uuid::parse_str(text)
        .expect("constant GUIDs are valid")
        .to_bytes_le()
}

fn ace(
    kind: u8,
    flags: u8,
    mask: u32,
    object: Option<&str>,
    inherited_object: Option<&str>,
    sid: &[u8],
) -> Vec<u8> {
    let mut body = mask.to_le_bytes().to_vec();
    if kind == ACCESS_ALLOWED_OBJECT_ACE_TYPE {
        let mut present = 0;
        if object.is_some() {
            present |= ACE_OBJECT_TYPE_PRESENT;
        }
        if inherited_object.is_some() {
            present |= ACE_INHERITED_OBJECT_TYPE_PRESENT;
        }
        body.extend_from_slice(&present.to_le_bytes());
        for g in [object, inherited_object].into_iter().flatten() {
            body.extend_from_slice(&guid(g));
        }
    }
    body.extend_from_slice(sid);
    let size = u16::try_from(4 + body.len()).expect("an ACE is small");
    let mut out = vec![kind, flags];
    out.extend_from_slice(&size.to_le_bytes());
    out.extend(body);
    out
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A self-relative security descriptor's control flags and DACL entries.
#[derive(Debug)]
pub struct Dacl {
    control: u16,
    pub aces: Vec<Vec<u8>>,
}

impl Dacl {
    /// Parses the DACL out of a self-relative security descriptor.
    pub fn parse(sd: &[u8]) -> Result<Self, String> {
        let bad = |what: &str| format!("the domain's security descriptor is malformed ({what})");
        if sd.first() != Some(&1) {
            return Err(bad("revision"));
        }
        let control = u16_at(sd, 2).ok_or_else(|| bad("header"))?;
        let offset = u32_at(sd, 16).ok_or_else(|| bad("header"))? as usize;
        if offset == 0 || control & SE_DACL_PRESENT == 0 {
            return Ok(Self {
                control,
                aces: Vec::new(),
            });
        }
        let count = u16_at(sd, offset + 4).ok_or_else(|| bad("ACL header"))?;
        let mut at = offset + 8;
        let mut aces = Vec::with_capacity(count.into());
        for _ in 0..count {
            let size = u16_at(sd, at + 2).ok_or_else(|| bad("ACE header"))? as usize;
            if size < 4 {
                return Err(bad("ACE size"));
            }
            aces.push(sd.get(at..at + size).ok_or_else(|| bad("ACE"))?.to_vec());
            at += size;
        }
        Ok(Self { control, aces })
    }

    /// Adds the ACEs that are not there yet, after the explicit ones and before the inherited
    /// ones (the canonical order). Returns how many were added.
    pub fn grant(&mut self, aces: Vec<Vec<u8>>) -> usize {
        let mut added = 0;
        for ace in aces {
            if self.aces.contains(&ace) {
                continue;
            }
            let position = self
                .aces
                .iter()
                .position(|a| a.get(1).is_some_and(|flags| flags & INHERITED_ACE != 0))
                .unwrap_or(self.aces.len());
            self.aces.insert(position, ace);
            added += 1;
        }
        added
    }

    /// A self-relative descriptor holding only this DACL, for a write with [`SD_FLAGS_DACL`].
    pub fn to_security_descriptor(&self) -> Vec<u8> {
        let acl_size: usize = 8 + self.aces.iter().map(Vec::len).sum::<usize>();
        let mut sd = Vec::with_capacity(20 + acl_size);
        sd.push(1); // revision
        sd.push(0);
        let control = (self.control | SE_DACL_PRESENT | SE_SELF_RELATIVE) & !0x0003; // no owner/group defaulted bits
        sd.extend_from_slice(&control.to_le_bytes());
        sd.extend_from_slice(&0u32.to_le_bytes()); // owner
        sd.extend_from_slice(&0u32.to_le_bytes()); // group
        sd.extend_from_slice(&0u32.to_le_bytes()); // SACL
        sd.extend_from_slice(&20u32.to_le_bytes()); // DACL right after the header
        sd.push(ACL_REVISION_DS);
        sd.push(0);
        sd.extend_from_slice(&u16::try_from(acl_size).unwrap_or(u16::MAX).to_le_bytes());
        sd.extend_from_slice(
            &u16::try_from(self.aces.len())
                .unwrap_or(u16::MAX)
                .to_le_bytes(),
        );
        sd.extend_from_slice(&0u16.to_le_bytes());
        for ace in &self.aces {
            sd.extend_from_slice(ace);
        }
        sd
    }
}

/// `S-1-5-21-…` text form of a binary SID, for messages.
pub fn sid_text(sid: &[u8]) -> String {
    if sid.len() < 8 {
        return "S-?".into();
    }
    let authority = sid[2..8]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut text = format!("S-{}-{authority}", sid[0]);
    for chunk in sid[8..].chunks_exact(4) {
        text.push_str(&format!(
            "-{}",
            u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(rid: u32) -> Vec<u8> {
        let mut s = vec![1, 5, 0, 0, 0, 0, 0, 5];
        for sub in [21u32, 1, 2, 3, rid] {
            s.extend_from_slice(&sub.to_le_bytes());
        }
        s
    }

    #[test]
    fn grant_is_idempotent_keeps_canonical_order_and_round_trips() {
        let explicit = ace(
            ACCESS_ALLOWED_ACE_TYPE,
            0,
            RIGHT_DS_READ,
            None,
            None,
            &sid(512),
        );
        let inherited = ace(
            ACCESS_ALLOWED_ACE_TYPE,
            INHERITED_ACE,
            RIGHT_DS_READ,
            None,
            None,
            &sid(513),
        );
        let mut dacl = Dacl {
            control: 0x8c04,
            aces: vec![explicit.clone(), inherited.clone()],
        };
        let ours = agent_aces(&sid(1105));
        assert!(!ours.iter().any(|a| dacl.aces.contains(a)));
        assert_eq!(dacl.grant(ours.clone()), 5);
        assert_eq!(dacl.grant(ours.clone()), 0, "a second grant adds nothing");
        assert!(ours.iter().all(|a| dacl.aces.contains(a)));
        assert_eq!(dacl.aces.first(), Some(&explicit));
        assert_eq!(
            dacl.aces.last(),
            Some(&inherited),
            "inherited ACEs stay last"
        );

        let parsed = Dacl::parse(&dacl.to_security_descriptor()).expect("parse");
        assert_eq!(parsed.aces, dacl.aces);
        assert_eq!(
            parsed.control & 0x8004,
            0x8004,
            "self-relative, DACL present"
        );
    }

    #[test]
    fn object_aces_carry_guids_in_mixed_endian_form() {
        let reset = &agent_aces(&sid(7))[1];
        assert_eq!(reset[0], ACCESS_ALLOWED_OBJECT_ACE_TYPE);
        // mask, flags, then the GUID 00299570-246d-11d0-a768-00aa006e0529 as stored by AD.
        assert_eq!(&reset[12..16], &[0x70, 0x95, 0x29, 0x00]);
        assert_eq!(&reset[16..18], &[0x6d, 0x24]);
        assert_eq!(usize::from(u16_at(reset, 2).unwrap()), reset.len());
        assert_eq!(sid_text(&sid(7)), "S-1-5-21-1-2-3-7");
    }

    #[test]
    fn malformed_descriptors_are_errors_not_panics() {
        assert!(Dacl::parse(&[]).is_err());
        assert!(Dacl::parse(&[
            1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 4, 0, 8, 0, 9, 0
        ])
        .is_err());
    }
}
