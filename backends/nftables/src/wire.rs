//! nf_tables set elements on the wire: the nfnetlink messages that add, delete, flush and dump the
//! elements of an interval set, and the decoding of the kernel's answers. Pure: bytes in, bytes
//! out; the socket lives in [`crate::netlink`].
//!
//! The encoding is what `nft` 1.0.6 sends (captured on a 6.18 kernel into
//! `tests/fixtures/netlink/`, compared byte for byte in the tests below), with three deliberate
//! differences:
//!
//! - Every element message carries `NLM_F_ACK`, so that each gets exactly one answer (an ack or an
//!   error) and the reader knows when it has heard everything. nft relies on "no news is good news"
//!   and a trailing generation query instead.
//! - No `NFTA_SET_ELEM_LIST_SET_ID`. nft adds the id its cache gave the set; the kernel looks a set
//!   up by name first and uses the id only to find a set created earlier in the same batch. Our
//!   batches never create sets, so the id could only ever match the wrong set.
//! - No leading "interval end" element at the family's first address (`0.0.0.0`, `::`), which nft
//!   adds whenever the first range does not start there (a relic of its old segment tree). The
//!   kernel's rbtree matches an address by the nearest element at or below it, and with nothing
//!   below the first start there is nothing to match: the element changes nothing. The decoder
//!   ignores it, since sets that nft wrote hold it.
//!
//! An interval set holds boundaries, not networks: `a/len` is a start element with key `a` and an
//! end element (flag [`NFT_SET_ELEM_INTERVAL_END`]) with the first address after the range. A range
//! reaching the family's last address has no end element; nft marks its start with the userdata
//! flag "interval open" (for its own listing; nft 1.0.6 prints such a range as a prefix without it
//! too, checked on this kernel), and we send that flag as well, to send exactly what nft sends.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use cfa_core::Family;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_packet_core::NetlinkBuffer;

/// nfnetlink subsystem of nf_tables (the high byte of the message type).
pub const NFNL_SUBSYS_NFTABLES: u8 = 10;
/// Adds elements to a set.
pub const NFT_MSG_NEWSETELEM: u8 = 12;
/// Reads (dumps) a set's elements.
pub const NFT_MSG_GETSETELEM: u8 = 13;
/// Deletes elements (or, without an element list, every element: a flush).
pub const NFT_MSG_DELSETELEM: u8 = 14;
/// Opens a batch (transaction).
pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
/// Closes a batch: commit. A batch that is not closed is validated and aborted.
pub const NFNL_MSG_BATCH_END: u16 = 17;

/// `NFTA_SET_ELEM_LIST_TABLE`: the table's name (NUL-terminated string).
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
/// `NFTA_SET_ELEM_LIST_SET`: the set's name.
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
/// `NFTA_SET_ELEM_LIST_ELEMENTS`: the nested list of elements.
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
/// `NFTA_SET_ELEM_LIST_SET_ID`: a set created in the same batch (not used, see the module doc).
pub const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
/// One element in the list (`NFTA_LIST_ELEM`). nft numbers them 1, 2, ...; the kernel ignores it.
pub const NFTA_LIST_ELEM: u16 = 1;
/// `NFTA_SET_ELEM_KEY`: nested data holding the key.
pub const NFTA_SET_ELEM_KEY: u16 = 1;
/// `NFTA_SET_ELEM_FLAGS`: u32, network byte order.
pub const NFTA_SET_ELEM_FLAGS: u16 = 3;
/// `NFTA_SET_ELEM_USERDATA`: opaque to the kernel, read by nft.
pub const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// `NFTA_DATA_VALUE`: the raw bytes of a key.
pub const NFTA_DATA_VALUE: u16 = 1;
/// Element flag: this element ends an interval.
pub const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
/// libnftnl's userdata tag for element flags, and its "interval open" flag.
const NFTNL_UDATA_SET_ELEM_FLAGS: u8 = 1;
const NFTNL_SET_ELEM_F_INTERVAL_OPEN: u32 = 1;

/// Table family `inet`.
pub const NFPROTO_INET: u8 = 1;
/// Table family `ip`.
pub const NFPROTO_IPV4: u8 = 2;
/// Table family `ip6`.
pub const NFPROTO_IPV6: u8 = 10;

/// Attribute flag: the value is a list of attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// Attribute flag: the value is in network byte order.
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// Netlink message flags and types used here.
pub const NLM_F_REQUEST: u16 = 0x1;
/// Part of a multipart answer (dumps).
pub const NLM_F_MULTI: u16 = 0x2;
/// Ask for an acknowledgement.
pub const NLM_F_ACK: u16 = 0x4;
/// The dump was interrupted by a change: its content is inconsistent, dump again.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// Dump everything.
pub const NLM_F_DUMP: u16 = 0x300;
/// Create what does not exist (`nft add element`).
pub const NLM_F_CREATE: u16 = 0x400;
/// On an error message: the request's payload was left out (`NETLINK_CAP_ACK`).
pub const NLM_F_CAPPED: u16 = 0x100;
/// On an error message: extended ack attributes follow (`NETLINK_EXT_ACK`).
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// An error or acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// The end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// Extended ack: a message text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Extended ack: offset of the offending attribute from the start of the request.
const NLMSGERR_ATTR_OFFS: u16 = 2;

/// The largest `NFTA_SET_ELEM_LIST_ELEMENTS` attribute we build, in bytes. An attribute's length is
/// a u16 (65,535); 48 KiB leaves a wide margin and still holds 1,228 IPv4 or 767 IPv6 CIDRs
/// (40 and 64 bytes each with their end element), so 60,000 CIDRs take about 60 messages.
pub const MAX_ELEMENTS_ATTR: usize = 48 * 1024;

/// The size of a netlink message header.
const NETLINK_HEADER_LEN: usize = 16;

/// The longest table or set name the kernel accepts (`NFT_NAME_MAXLEN` less the NUL).
const MAX_NAME: usize = 255;

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended in the middle of something.
    #[error("truncated {what}: {have} bytes where at least {need} are needed")]
    Truncated {
        /// What was being read ("netlink header", "attribute").
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes there.
        have: usize,
    },
    /// A length field that cannot be right.
    #[error("bad length {len} in {what}")]
    BadLength {
        /// What carried it.
        what: &'static str,
        /// The length found.
        len: usize,
    },
    /// A network of the wrong family for the set's key.
    #[error("{net} cannot go into {set}: its key is {key}")]
    WrongFamily {
        /// The network.
        net: IpNet,
        /// `inet cf_allowlist allow_v4`.
        set: String,
        /// The set's key family.
        key: Family,
    },
    /// A table or set name the kernel would refuse (empty, too long, or with a NUL).
    #[error("invalid nftables name {0:?}")]
    BadName(String),
}

/// The table family number for a table family name: `inet`, `ip` or `ip6`.
pub fn table_family(name: &str) -> Option<u8> {
    match name {
        "inet" => Some(NFPROTO_INET),
        "ip" => Some(NFPROTO_IPV4),
        "ip6" => Some(NFPROTO_IPV6),
        _ => None,
    }
}

/// The name of a table family number, as nft spells it (`family 7` for ones we do not use).
pub fn family_name(family: u8) -> String {
    match family {
        NFPROTO_INET => "inet".to_string(),
        NFPROTO_IPV4 => "ip".to_string(),
        NFPROTO_IPV6 => "ip6".to_string(),
        other => format!("family {other}"),
    }
}

/// `inet cf_allowlist allow_v4`: how messages name a set.
pub fn set_ref(family: u8, table: &str, set: &str) -> String {
    format!("{} {table} {set}", family_name(family))
}

/// The element changes of one set, applied in this order: flush, removals, additions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetChange {
    /// The table's family ([`table_family`]).
    pub family: u8,
    /// The table's name.
    pub table: String,
    /// The set's name.
    pub set: String,
    /// The family of the set's key; every network must be of it.
    pub key: Family,
    /// Delete every element first (a `DELSETELEM` without an element list).
    pub flush: bool,
    /// Networks to delete, each exactly as it is in the set.
    pub remove: Vec<IpNet>,
    /// Networks to add. Sent in the order given (the backend passes sorted lists, as nft sends).
    pub add: Vec<IpNet>,
}

impl SetChange {
    /// `inet cf_allowlist allow_v4`.
    pub fn set_ref(&self) -> String {
        set_ref(self.family, &self.table, &self.set)
    }
}

/// What one message of a batch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Delete every element.
    Flush,
    /// Delete these elements.
    Remove,
    /// Add these elements.
    Add,
}

/// One element message of a batch, kept to explain its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Its sequence number.
    pub seq: u32,
    /// What it does.
    pub op: Op,
    /// `inet cf_allowlist allow_v4`.
    pub set: String,
    /// The networks it carries, in order.
    pub nets: Vec<IpNet>,
    /// For each element attribute: its offset from the start of the message, and the index in
    /// `nets` of the network it belongs to. The kernel's extended ack points at such an offset.
    elements: Vec<(u32, u32)>,
}

impl Sent {
    /// The network whose element starts at `offset` in this message (from an extended ack).
    pub fn net_at(&self, offset: u32) -> Option<IpNet> {
        let i = self
            .elements
            .binary_search_by_key(&offset, |(o, _)| *o)
            .ok()?;
        self.nets.get(self.elements[i].1 as usize).copied()
    }

    /// "adding 10.0.0.0/24 (and 3 more) to set inet t s", or with the failing element known
    /// (`failing`), "adding 10.0.0.0/24 to set inet t s".
    pub fn describe(&self, failing: Option<IpNet>) -> String {
        let what = match (failing, self.nets.first()) {
            (Some(net), _) => net.to_string(),
            (None, Some(first)) if self.nets.len() > 1 => {
                format!("{first} (and {} more)", self.nets.len() - 1)
            }
            (None, Some(first)) => first.to_string(),
            (None, None) => "nothing".to_string(),
        };
        match self.op {
            Op::Flush => format!("flushing set {}", self.set),
            Op::Remove => format!("deleting {what} from set {}", self.set),
            Op::Add => format!("adding {what} to set {}", self.set),
        }
    }
}

/// A batch ready to send in one `sendmsg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The bytes: BATCH_BEGIN, the element messages, BATCH_END when committing.
    pub bytes: Vec<u8>,
    /// The sequence number of BATCH_BEGIN: an error about the batch as a whole (the commit failed)
    /// comes with it.
    pub begin_seq: u32,
    /// The sequence numbers that each get exactly one ack or error, in order.
    pub seqs: Vec<u32>,
    /// The element messages, in the order of `seqs`.
    pub messages: Vec<Sent>,
    /// The first sequence number not used.
    pub next_seq: u32,
}

/// Encodes `changes` as one batch starting at sequence number `first_seq`: for every set in turn,
/// its flush, its removals, its additions. With `commit` false there is no BATCH_END: the kernel
/// then checks every message and aborts the transaction (a dry run).
///
/// Deletions precede additions within a set because an interval set refuses an element that
/// overlaps one still present (replacing `104.16.0.0/12` by `104.16.0.0/13` and `104.24.0.0/14`).
pub fn encode_batch(
    first_seq: u32,
    changes: &[SetChange],
    commit: bool,
) -> Result<Batch, WireError> {
    let mut bytes = Vec::new();
    let mut seq = first_seq;
    let begin_seq = seq;
    put_batch_marker(&mut bytes, NFNL_MSG_BATCH_BEGIN, seq);
    seq = seq.wrapping_add(1);
    let mut messages = Vec::new();
    for change in changes {
        check_name(&change.table)?;
        check_name(&change.set)?;
        let set = change.set_ref();
        for net in change.remove.iter().chain(&change.add) {
            if Family::of(net) != change.key {
                return Err(WireError::WrongFamily {
                    net: *net,
                    set,
                    key: change.key,
                });
            }
        }
        if change.flush {
            put_flush(&mut bytes, seq, change);
            messages.push(Sent {
                seq,
                op: Op::Flush,
                set: set.clone(),
                nets: Vec::new(),
                elements: Vec::new(),
            });
            seq = seq.wrapping_add(1);
        }
        for (op, nets) in [(Op::Remove, &change.remove), (Op::Add, &change.add)] {
            let mut rest = nets.as_slice();
            while !rest.is_empty() {
                let (sent, used) = put_elements(&mut bytes, seq, op, change, &set, rest);
                rest = &rest[used..];
                messages.push(sent);
                seq = seq.wrapping_add(1);
            }
        }
    }
    if commit {
        put_batch_marker(&mut bytes, NFNL_MSG_BATCH_END, seq);
        seq = seq.wrapping_add(1);
    }
    Ok(Batch {
        bytes,
        begin_seq,
        seqs: messages.iter().map(|m| m.seq).collect(),
        messages,
        next_seq: seq,
    })
}

/// A GETSETELEM dump request for one set (attributes in nft's order: set, then table).
pub fn encode_get_elements(seq: u32, family: u8, table: &str, set: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let msg = begin_message(
        &mut buf,
        nft_type(NFT_MSG_GETSETELEM),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family,
        0,
    );
    put_str(&mut buf, NFTA_SET_ELEM_LIST_SET, set);
    put_str(&mut buf, NFTA_SET_ELEM_LIST_TABLE, table);
    end_message(&mut buf, msg);
    buf
}

/// The netlink message type of an nf_tables message.
pub fn nft_type(msg: u8) -> u16 {
    (u16::from(NFNL_SUBSYS_NFTABLES) << 8) | u16::from(msg)
}

fn check_name(name: &str) -> Result<(), WireError> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') {
        return Err(WireError::BadName(name.to_string()));
    }
    Ok(())
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Starts a message (header and nfgenmsg); returns its offset for [`end_message`].
pub(crate) fn begin_message(
    buf: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
) -> usize {
    let start = buf.len();
    buf.resize(start + NETLINK_HEADER_LEN, 0);
    let mut header = NetlinkBuffer::new(&mut buf[start..]);
    header.set_message_type(ty);
    header.set_flags(flags);
    header.set_sequence_number(seq);
    header.set_port_number(0);
    // nfgenmsg: family, version (NFNETLINK_V0), resource id in network byte order.
    buf.push(family);
    buf.push(0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    start
}

pub(crate) fn end_message(buf: &mut [u8], start: usize) {
    let len = buf.len() - start;
    NetlinkBuffer::new(&mut buf[start..]).set_length(len as u32);
}

fn put_batch_marker(buf: &mut Vec<u8>, ty: u16, seq: u32) {
    let msg = begin_message(
        buf,
        ty,
        NLM_F_REQUEST,
        seq,
        0,
        u16::from(NFNL_SUBSYS_NFTABLES),
    );
    end_message(buf, msg);
}

pub(crate) fn put_attr(buf: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_le_bytes());
    buf.extend_from_slice(&ty.to_le_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

pub(crate) fn put_str(buf: &mut Vec<u8>, ty: u16, value: &str) {
    let mut bytes = Vec::with_capacity(value.len() + 1);
    bytes.extend_from_slice(value.as_bytes());
    bytes.push(0);
    put_attr(buf, ty, &bytes);
}

fn begin_nested(buf: &mut Vec<u8>, ty: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_le_bytes());
    start
}

fn end_nested(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_le_bytes());
}

fn put_flush(buf: &mut Vec<u8>, seq: u32, change: &SetChange) {
    // nft's order for a flush: set, then table.
    let msg = begin_message(
        buf,
        nft_type(NFT_MSG_DELSETELEM),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        change.family,
        0,
    );
    put_str(buf, NFTA_SET_ELEM_LIST_SET, &change.set);
    put_str(buf, NFTA_SET_ELEM_LIST_TABLE, &change.table);
    end_message(buf, msg);
}

/// The boundaries of a network: its first address and, unless it reaches the family's last
/// address, the first address after it.
fn boundaries(net: &IpNet) -> (Vec<u8>, Option<Vec<u8>>) {
    match net {
        IpNet::V4(n) => {
            let first = u32::from(n.network());
            let after = u32::from(n.broadcast()).checked_add(1);
            (
                first.to_be_bytes().to_vec(),
                after.map(|a| a.to_be_bytes().to_vec()),
            )
        }
        IpNet::V6(n) => {
            let first = u128::from(n.network());
            let after = u128::from(n.broadcast()).checked_add(1);
            (
                first.to_be_bytes().to_vec(),
                after.map(|a| a.to_be_bytes().to_vec()),
            )
        }
    }
}

/// Bytes the elements of `net` take in an element list.
fn elements_len(net: &IpNet) -> usize {
    let key = match net {
        IpNet::V4(_) => 4,
        IpNet::V6(_) => 16,
    };
    // element header + key nest + value attribute
    let start = 4 + 4 + 4 + key;
    let (_, end) = boundaries(net);
    match end {
        // + flags attribute
        Some(_) => start + start + 8,
        // + userdata (2-byte TLV header + u32, padded)
        None => start + align4(4 + 6),
    }
}

fn put_element(buf: &mut Vec<u8>, index: u16, key: &[u8], end: bool, open: bool) {
    let elem = begin_nested(buf, index);
    if end {
        put_attr(
            buf,
            NFTA_SET_ELEM_FLAGS,
            &NFT_SET_ELEM_INTERVAL_END.to_be_bytes(),
        );
    }
    let k = begin_nested(buf, NFTA_SET_ELEM_KEY);
    put_attr(buf, NFTA_DATA_VALUE, key);
    end_nested(buf, k);
    if open {
        let mut udata = vec![NFTNL_UDATA_SET_ELEM_FLAGS, 4];
        // libnftnl writes its userdata values in host byte order.
        udata.extend_from_slice(&NFTNL_SET_ELEM_F_INTERVAL_OPEN.to_ne_bytes());
        put_attr(buf, NFTA_SET_ELEM_USERDATA, &udata);
    }
    end_nested(buf, elem);
}

/// Writes one NEWSETELEM or DELSETELEM message with as many of `nets` as fit in
/// [`MAX_ELEMENTS_ATTR`] (at least one); returns what it sent and how many networks it took.
fn put_elements(
    buf: &mut Vec<u8>,
    seq: u32,
    op: Op,
    change: &SetChange,
    set: &str,
    nets: &[IpNet],
) -> (Sent, usize) {
    let (ty, flags) = match op {
        Op::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK),
        _ => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
    };
    let msg = begin_message(buf, nft_type(ty), flags, seq, change.family, 0);
    put_str(buf, NFTA_SET_ELEM_LIST_TABLE, &change.table);
    put_str(buf, NFTA_SET_ELEM_LIST_SET, &change.set);
    let list = begin_nested(buf, NFTA_SET_ELEM_LIST_ELEMENTS);
    let mut elements = Vec::new();
    let mut used = 0;
    let mut size = 4;
    let mut index: u16 = 0;
    for net in nets {
        let len = elements_len(net);
        if used > 0 && size + len > MAX_ELEMENTS_ATTR {
            break;
        }
        size += len;
        let (first, after) = boundaries(net);
        index = index.wrapping_add(1);
        elements.push(((buf.len() - msg) as u32, used as u32));
        put_element(buf, index, &first, false, after.is_none());
        if let Some(after) = after {
            index = index.wrapping_add(1);
            elements.push(((buf.len() - msg) as u32, used as u32));
            put_element(buf, index, &after, true, false);
        }
        used += 1;
    }
    end_nested(buf, list);
    end_message(buf, msg);
    (
        Sent {
            seq,
            op,
            set: set.to_string(),
            nets: nets[..used].to_vec(),
            elements,
        },
        used,
    )
}

/// One netlink message of a received (or sent) buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid`.
    pub port: u32,
    /// Everything after the netlink header.
    pub payload: &'a [u8],
}

/// Splits a datagram into its netlink messages.
pub fn split_messages(mut buf: &[u8]) -> Result<Vec<Message<'_>>, WireError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let msg = NetlinkBuffer::new_checked(buf).map_err(|_| {
            if buf.len() < NETLINK_HEADER_LEN {
                WireError::Truncated {
                    what: "netlink header",
                    need: NETLINK_HEADER_LEN,
                    have: buf.len(),
                }
            } else {
                WireError::BadLength {
                    what: "netlink message",
                    len: u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize,
                }
            }
        })?;
        let len = msg.length() as usize;
        out.push(Message {
            ty: msg.message_type(),
            flags: msg.flags(),
            seq: msg.sequence_number(),
            port: msg.port_number(),
            payload: msg.payload(),
        });
        buf = buf.get(align4(len)..).unwrap_or(&[]);
    }
    Ok(out)
}

/// The attributes in `buf`: (type without the flag bits, flags, value).
pub(crate) struct Attrs<'a> {
    buf: &'a [u8],
}

pub(crate) fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        if self.buf.len() < 4 {
            let have = self.buf.len();
            self.buf = &[];
            return Some(Err(WireError::Truncated {
                what: "attribute header",
                need: 4,
                have,
            }));
        }
        let len = usize::from(u16::from_le_bytes([self.buf[0], self.buf[1]]));
        let ty = u16::from_le_bytes([self.buf[2], self.buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > self.buf.len() {
            self.buf = &[];
            return Some(Err(WireError::BadLength {
                what: "attribute",
                len,
            }));
        }
        let value = &self.buf[4..len];
        self.buf = self.buf.get(align4(len)..).unwrap_or(&[]);
        Some(Ok((ty, value)))
    }
}

pub(crate) fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// One element as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawElement {
    /// The key's bytes (empty for an element without a key, such as a catch-all).
    pub key: Vec<u8>,
    /// `NFTA_SET_ELEM_FLAGS` (0 when absent).
    pub flags: u32,
}

/// One NEWSETELEM message of a dump, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dumped {
    /// The table it names.
    pub table: String,
    /// The set it names.
    pub set: String,
    /// Its elements, in the kernel's order.
    pub elements: Vec<RawElement>,
}

/// Decodes the payload (after the netlink header) of one NEWSETELEM message of a dump.
pub fn decode_dump(payload: &[u8]) -> Result<Dumped, WireError> {
    let attrs_buf = payload.get(4..).ok_or(WireError::Truncated {
        what: "nfgenmsg",
        need: 4,
        have: payload.len(),
    })?;
    let mut out = Dumped {
        table: String::new(),
        set: String::new(),
        elements: Vec::new(),
    };
    for attr in attrs(attrs_buf) {
        let (ty, value) = attr?;
        match ty {
            NFTA_SET_ELEM_LIST_TABLE => out.table = c_string(value),
            NFTA_SET_ELEM_LIST_SET => out.set = c_string(value),
            NFTA_SET_ELEM_LIST_ELEMENTS => {
                for elem in attrs(value) {
                    let (_, elem) = elem?;
                    out.elements.push(decode_element(elem)?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The elements of one NEWSETELEM dump message (its payload, after the netlink header).
pub fn decode_elements(payload: &[u8]) -> Result<Vec<RawElement>, WireError> {
    decode_dump(payload).map(|d| d.elements)
}

fn decode_element(buf: &[u8]) -> Result<RawElement, WireError> {
    let mut elem = RawElement {
        key: Vec::new(),
        flags: 0,
    };
    for attr in attrs(buf) {
        let (ty, value) = attr?;
        match ty {
            NFTA_SET_ELEM_KEY => {
                for data in attrs(value) {
                    let (ty, value) = data?;
                    if ty == NFTA_DATA_VALUE {
                        elem.key = value.to_vec();
                    }
                }
            }
            NFTA_SET_ELEM_FLAGS => {
                let bytes: [u8; 4] = value.try_into().map_err(|_| WireError::BadLength {
                    what: "element flags",
                    len: value.len(),
                })?;
                elem.flags = u32::from_be_bytes(bytes);
            }
            _ => {}
        }
    }
    Ok(elem)
}

/// An NLMSG_ERROR message: an acknowledgement (`code` 0) or an error (`-errno`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// 0, or the negative errno.
    pub code: i32,
    /// The sequence number of the request it answers.
    pub seq: u32,
    /// With extended acks: the offset of the offending attribute in the request.
    pub offset: Option<u32>,
    /// With extended acks: the kernel's message, if it gave one.
    pub text: Option<String>,
}

/// Decodes an NLMSG_ERROR message (`flags` are its header's flags, `payload` what follows it).
pub fn decode_ack(flags: u16, payload: &[u8]) -> Result<Ack, WireError> {
    let truncated = |need| WireError::Truncated {
        what: "netlink error message",
        need,
        have: payload.len(),
    };
    let code_bytes: [u8; 4] = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(truncated(4))?;
    let code = i32::from_ne_bytes(code_bytes);
    let request = payload
        .get(4..4 + NETLINK_HEADER_LEN)
        .ok_or(truncated(4 + NETLINK_HEADER_LEN))?;
    let request_len = u32::from_le_bytes([request[0], request[1], request[2], request[3]]) as usize;
    let seq = u32::from_le_bytes([request[8], request[9], request[10], request[11]]);
    let mut ack = Ack {
        code,
        seq,
        offset: None,
        text: None,
    };
    // The request comes back whole unless capped (NETLINK_CAP_ACK), or always capped for an ack.
    let skip = if flags & NLM_F_CAPPED != 0 || code == 0 {
        NETLINK_HEADER_LEN
    } else {
        align4(request_len.max(NETLINK_HEADER_LEN))
    };
    if flags & NLM_F_ACK_TLVS != 0 {
        if let Some(tlvs) = payload.get(4 + skip..) {
            for attr in attrs(tlvs) {
                let Ok((ty, value)) = attr else { break };
                match ty {
                    NLMSGERR_ATTR_MSG => ack.text = Some(c_string(value)),
                    NLMSGERR_ATTR_OFFS => {
                        if let Ok(b) = <[u8; 4]>::try_from(value) {
                            ack.offset = Some(u32::from_ne_bytes(b));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(ack)
}

/// What an interval set holds, read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetContents {
    /// The intervals that are exactly one CIDR each, ascending.
    pub nets: Vec<IpNet>,
    /// Everything else, as readable text (`10.0.0.1-10.0.0.5`, "interval end 10.0.0.9 without a
    /// start"): elements we never write, so the set is not ours as it stands.
    pub other: Vec<String>,
}

/// Pairs the boundaries of an interval set (in any order: the kernel dumps them descending) into
/// intervals: each that is exactly one CIDR becomes that CIDR, anything else goes to `other`.
pub fn intervals(key: Family, elems: &[RawElement]) -> SetContents {
    let (width, bits, max) = match key {
        Family::V4 => (4usize, 32u32, u128::from(u32::MAX)),
        Family::V6 => (16, 128, u128::MAX),
    };
    let mut out = SetContents::default();
    let mut points: Vec<(u128, bool)> = Vec::with_capacity(elems.len());
    for e in elems {
        if e.key.len() != width {
            out.other.push(format!(
                "element with a {}-byte key {} (an {key} set has {width}-byte keys)",
                e.key.len(),
                hex(&e.key)
            ));
            continue;
        }
        let value = e
            .key
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
        if e.flags & !NFT_SET_ELEM_INTERVAL_END != 0 {
            out.other.push(format!(
                "element {} with flags {:#x}",
                addr(key, value),
                e.flags
            ));
            continue;
        }
        points.push((value, e.flags & NFT_SET_ELEM_INTERVAL_END != 0));
    }
    // Ascending; at one key an end sorts before a start: it closes the range below (adjacent
    // ranges share that key) before the next one opens.
    points.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut open: Option<u128> = None;
    for (value, end) in points {
        match (open, end) {
            (None, false) => open = Some(value),
            (Some(start), false) => {
                out.other.push(format!(
                    "interval start {} without an end",
                    addr(key, start)
                ));
                open = Some(value);
            }
            (Some(start), true) => {
                if value == start {
                    out.other
                        .push(format!("empty interval at {}", addr(key, start)));
                } else {
                    push_interval(&mut out, key, bits, start, value - 1);
                }
                open = None;
            }
            // nft's leading end at the family's first address: closes nothing, means nothing.
            (None, true) if value == 0 => {}
            (None, true) => out
                .other
                .push(format!("interval end {} without a start", addr(key, value))),
        }
    }
    if let Some(start) = open {
        push_interval(&mut out, key, bits, start, max);
    }
    out
}

fn push_interval(out: &mut SetContents, key: Family, bits: u32, first: u128, last: u128) {
    let span = last - first;
    // One CIDR: the size is a power of two and the first address is aligned to it. For the whole
    // IPv6 space span + 1 wraps to 0, which passes too.
    if span & span.wrapping_add(1) == 0 && first & span == 0 {
        let len = (bits - span.count_ones()) as u8;
        let net = match key {
            Family::V4 => Ipv4Net::new(Ipv4Addr::from(first as u32), len).map(IpNet::V4),
            Family::V6 => Ipv6Net::new(Ipv6Addr::from(first), len).map(IpNet::V6),
        };
        if let Ok(net) = net {
            out.nets.push(net);
            return;
        }
    }
    out.other
        .push(format!("{}-{}", addr(key, first), addr(key, last)));
}

fn addr(key: Family, value: u128) -> String {
    match key {
        Family::V4 => Ipv4Addr::from(value as u32).to_string(),
        Family::V6 => Ipv6Addr::from(value).to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    struct Hex<'a>(&'a [u8]);
    impl fmt::Display for Hex<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for b in self.0 {
                write!(f, "{b:02x}")?;
            }
            Ok(())
        }
    }
    Hex(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The buffers of a capture file: `(syscall, bytes)` per line.
    fn capture(text: &str) -> Vec<(String, Vec<u8>)> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (call, hexs) = l.split_once(' ').expect("capture line: call hex");
                let bytes = (0..hexs.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hexs[i..i + 2], 16).expect("hex"))
                    .collect();
                (call.to_string(), bytes)
            })
            .collect()
    }

    /// The one batch nft sent in a capture.
    fn sent_batch(text: &str) -> Vec<u8> {
        let batches: Vec<Vec<u8>> = capture(text)
            .into_iter()
            .filter(|(c, _)| c == "sendmsg")
            .map(|(_, b)| b)
            .collect();
        assert_eq!(batches.len(), 1, "one batch per capture");
        batches.into_iter().next().unwrap()
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    /// nft's element message turned into ours by byte surgery on nft's own bytes (never through
    /// our encoder): NLM_F_ACK added, the SET_ID attribute and a leading end element at the zero
    /// key dropped, the remaining elements renumbered from 1, lengths fixed.
    fn as_ours(nft: &[u8]) -> Vec<u8> {
        let mut out = nft[..20].to_vec();
        let flags = u16_at(&out, 6) | NLM_F_ACK;
        out[6..8].copy_from_slice(&flags.to_le_bytes());
        let mut at = 20;
        let end = u32::from_le_bytes(nft[0..4].try_into().unwrap()) as usize;
        while at < end {
            let len = usize::from(u16_at(nft, at));
            let ty = u16_at(nft, at + 2) & NLA_TYPE_MASK;
            let next = align4(at + len);
            match ty {
                NFTA_SET_ELEM_LIST_SET_ID => {}
                NFTA_SET_ELEM_LIST_ELEMENTS => {
                    let list = out.len();
                    out.extend_from_slice(&nft[at..at + 4]);
                    let mut e = at + 4;
                    let mut index = 0u16;
                    while e < at + len {
                        let elen = usize::from(u16_at(nft, e));
                        let elem = &nft[e..e + elen];
                        let zero_end = elem.len() == 24
                            && elem[8..12] == [0, 0, 0, 1]
                            && elem[20..24] == [0; 4]
                            || elem.len() == 36
                                && elem[8..12] == [0, 0, 0, 1]
                                && elem[20..36] == [0; 16];
                        if !(index == 0 && zero_end) {
                            index += 1;
                            let at_out = out.len();
                            out.extend_from_slice(elem);
                            let ty = index | NLA_F_NESTED;
                            out[at_out + 2..at_out + 4].copy_from_slice(&ty.to_le_bytes());
                        }
                        e += align4(elen);
                    }
                    let l = (out.len() - list) as u16;
                    out[list..list + 2].copy_from_slice(&l.to_le_bytes());
                }
                _ => out.extend_from_slice(&nft[at..next.min(end)]),
            }
            at = next;
        }
        let l = out.len() as u32;
        out[0..4].copy_from_slice(&l.to_le_bytes());
        out
    }

    /// nft's whole batch, each element message turned into ours.
    fn batch_as_ours(nft: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < nft.len() {
            let len = u32::from_le_bytes(nft[at..at + 4].try_into().unwrap()) as usize;
            let msg = &nft[at..at + len];
            let ty = u16_at(msg, 4);
            if ty == nft_type(NFT_MSG_NEWSETELEM) || ty == nft_type(NFT_MSG_DELSETELEM) {
                out.extend(as_ours(msg));
            } else {
                out.extend_from_slice(msg);
            }
            at += align4(len);
        }
        out
    }

    fn nets(items: &[&str]) -> Vec<IpNet> {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn change(family: u8, table: &str, set: &str, key: Family) -> SetChange {
        SetChange {
            family,
            table: table.into(),
            set: set.into(),
            key,
            flush: false,
            remove: vec![],
            add: vec![],
        }
    }

    const ADD_V4: &str = include_str!("../tests/fixtures/netlink/add_v4.hex");
    const ADD_V4_EDGES: &str = include_str!("../tests/fixtures/netlink/add_v4_edges.hex");
    const DELETE_V4: &str = include_str!("../tests/fixtures/netlink/delete_v4.hex");
    const ADD_V6_INET: &str = include_str!("../tests/fixtures/netlink/add_v6_inet.hex");
    const ADD_V6_IP6: &str = include_str!("../tests/fixtures/netlink/add_v6_ip6.hex");
    const FLUSH_V4: &str = include_str!("../tests/fixtures/netlink/flush_v4.hex");
    const LIST_V4: &str = include_str!("../tests/fixtures/netlink/list_v4.hex");
    const LIST_V6: &str = include_str!("../tests/fixtures/netlink/list_v6.hex");

    #[test]
    fn add_matches_nft_byte_for_byte() {
        // nft add element inet t s { 172.16.0.0/12, 10.0.0.0/24 }: nft sorts, the backend passes
        // sorted lists.
        let mut c = change(NFPROTO_INET, "t", "s", Family::V4);
        c.add = nets(&["10.0.0.0/24", "172.16.0.0/12"]);
        let ours = encode_batch(0, &[c], true).unwrap();
        let nft = sent_batch(ADD_V4);
        assert_eq!(hex(&ours.bytes), hex(&batch_as_ours(&nft)));
        assert_eq!(ours.begin_seq, 0);
        assert_eq!(ours.seqs, vec![1]);
        assert_eq!(ours.next_seq, 3);
        // What surgery removed is exactly the SET_ID (8 bytes) and the zero end (24 bytes).
        assert_eq!(nft.len() - ours.bytes.len(), 8 + 24);
    }

    #[test]
    fn edges_match_nft_open_interval_and_range_from_zero() {
        // 0.0.0.0/8 (nft adds no zero end then) and 255.255.255.0/24 (no end element, userdata
        // "interval open"): only SET_ID and the ACK flag differ.
        let mut c = change(NFPROTO_INET, "t", "s", Family::V4);
        c.add = nets(&["0.0.0.0/8", "10.0.0.0/24", "255.255.255.0/24"]);
        let ours = encode_batch(0, &[c], true).unwrap();
        let nft = sent_batch(ADD_V4_EDGES);
        assert_eq!(hex(&ours.bytes), hex(&batch_as_ours(&nft)));
        assert_eq!(nft.len() - ours.bytes.len(), 8);
    }

    #[test]
    fn delete_matches_nft_byte_for_byte() {
        // nft keeps the typed order for a delete; we send the order given.
        let mut c = change(NFPROTO_INET, "t", "s", Family::V4);
        c.remove = nets(&["172.16.0.0/12", "10.0.0.0/24"]);
        let ours = encode_batch(0, &[c], true).unwrap();
        let nft = sent_batch(DELETE_V4);
        assert_eq!(hex(&ours.bytes), hex(&batch_as_ours(&nft)));
        assert_eq!(nft.len(), ours.bytes.len());
    }

    #[test]
    fn ipv6_matches_nft_in_inet_and_ip6_tables() {
        let mut c = change(NFPROTO_INET, "t", "s6", Family::V6);
        c.add = nets(&["2400:cb00::/32", "2606:4700::/32", "ffff::/16"]);
        let ours = encode_batch(0, &[c], true).unwrap();
        assert_eq!(
            hex(&ours.bytes),
            hex(&batch_as_ours(&sent_batch(ADD_V6_INET)))
        );
        let mut c = change(NFPROTO_IPV6, "t6", "s6", Family::V6);
        c.add = nets(&["2a06:98c0::/29"]);
        let ours = encode_batch(0, &[c], true).unwrap();
        assert_eq!(
            hex(&ours.bytes),
            hex(&batch_as_ours(&sent_batch(ADD_V6_IP6)))
        );
    }

    #[test]
    fn flush_matches_nft() {
        let mut c = change(NFPROTO_INET, "t", "s", Family::V4);
        c.flush = true;
        let ours = encode_batch(0, &[c], true).unwrap();
        assert_eq!(hex(&ours.bytes), hex(&batch_as_ours(&sent_batch(FLUSH_V4))));
        assert_eq!(ours.messages[0].op, Op::Flush);
    }

    #[test]
    fn dump_request_matches_nft() {
        // nft's cache fill sends the same request for every set; take the one for "s".
        let want = capture(ADD_V4)
            .into_iter()
            .find(|(c, b)| {
                c == "sendto"
                    && u16_at(b, 4) == nft_type(NFT_MSG_GETSETELEM)
                    && b.windows(4).any(|w| w == b"s\0\0\0")
            })
            .unwrap()
            .1;
        assert_eq!(
            hex(&encode_get_elements(0, NFPROTO_INET, "t", "s")),
            hex(&want)
        );
    }

    /// The elements the kernel dumped for `set` in a capture of `nft list set`.
    fn dumped(text: &str, set: &str) -> Vec<RawElement> {
        let mut out = Vec::new();
        for (call, buf) in capture(text) {
            if call != "recvmsg" {
                continue;
            }
            for m in split_messages(&buf).unwrap() {
                if m.ty == nft_type(NFT_MSG_NEWSETELEM) {
                    let d = decode_dump(m.payload).unwrap();
                    if d.set == set {
                        assert_eq!(d.table, "t");
                        out.extend(d.elements);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn kernel_dump_decodes_to_the_sets_contents() {
        let elems = dumped(LIST_V4, "s");
        // The kernel's order is descending, with nft's zero end last.
        assert_eq!(elems.first().unwrap().key, vec![255, 255, 255, 0]);
        assert_eq!(elems.last().unwrap().key, vec![0, 0, 0, 0]);
        assert_eq!(elems.last().unwrap().flags, NFT_SET_ELEM_INTERVAL_END);
        let got = intervals(Family::V4, &elems);
        assert_eq!(
            got.nets,
            nets(&[
                "10.0.1.0/24",
                "10.0.2.0/24",
                "192.168.0.0/16",
                "255.255.255.0/24"
            ])
        );
        assert_eq!(got.other, vec!["10.0.0.1-10.0.0.5".to_string()]);

        let got = intervals(Family::V6, &dumped(LIST_V6, "s6"));
        assert_eq!(
            got.nets,
            nets(&["2400:cb00::/32", "2606:4700::/32", "ffff::/16"])
        );
        assert!(got.other.is_empty(), "{:?}", got.other);
    }

    #[test]
    fn odd_contents_go_to_other() {
        let e = |key: &[u8], flags| RawElement {
            key: key.to_vec(),
            flags,
        };
        let got = intervals(
            Family::V4,
            &[
                e(&[10, 0, 0, 9], 1),
                e(&[10, 0, 1, 0], 0),
                e(&[10, 0, 2, 0], 0),
                e(&[10, 0, 3, 0], 1),
                e(&[1, 2, 3], 0),
                e(&[], 2),
            ],
        );
        assert_eq!(got.nets, nets(&["10.0.2.0/24"]));
        assert_eq!(
            got.other,
            vec![
                "element with a 3-byte key 010203 (an ipv4 set has 4-byte keys)",
                "element with a 0-byte key  (an ipv4 set has 4-byte keys)",
                "interval end 10.0.0.9 without a start",
                "interval start 10.0.1.0 without an end",
            ]
        );
        // The whole space, and a range up to the end that is not a CIDR.
        let got = intervals(Family::V6, &[e(&[0; 16], 0)]);
        assert_eq!(got.nets, nets(&["::/0"]));
        let got = intervals(Family::V4, &[e(&[255, 255, 255, 1], 0)]);
        assert_eq!(got.other, vec!["255.255.255.1-255.255.255.255"]);
    }

    #[test]
    fn deletes_precede_adds_and_messages_are_split() {
        let mut a = change(NFPROTO_INET, "t", "s", Family::V4);
        a.flush = true;
        a.remove = nets(&["104.16.0.0/12"]);
        a.add = (0..3000u32)
            .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap()))
            .collect();
        let mut b = change(NFPROTO_INET, "t", "s6", Family::V6);
        b.add = nets(&["2400:cb00::/32"]);
        let batch = encode_batch(100, &[a, b], false).unwrap();
        let ops: Vec<(Op, usize)> = batch
            .messages
            .iter()
            .map(|m| (m.op, m.nets.len()))
            .collect();
        assert_eq!(
            ops,
            vec![
                (Op::Flush, 0),
                (Op::Remove, 1),
                (Op::Add, 1228),
                (Op::Add, 1228),
                (Op::Add, 544),
                (Op::Add, 1)
            ]
        );
        assert_eq!(batch.seqs, (101..107).collect::<Vec<_>>());
        let msgs = split_messages(&batch.bytes).unwrap();
        // BEGIN and no END: a dry run.
        assert_eq!(msgs.first().unwrap().ty, NFNL_MSG_BATCH_BEGIN);
        assert_ne!(msgs.last().unwrap().ty, NFNL_MSG_BATCH_END);
        for m in &msgs[1..] {
            assert!(m.payload.len() + 16 < MAX_ELEMENTS_ATTR + 100);
            assert_eq!(m.flags & NLM_F_ACK, NLM_F_ACK);
        }
        assert_eq!(
            batch.messages[2].describe(None),
            "adding 10.0.0.0/24 (and 1227 more) to set inet t s"
        );
        assert_eq!(
            batch.messages[1].describe(None),
            "deleting 104.16.0.0/12 from set inet t s"
        );
        // The kernel's extended ack points at an element: offsets map back to its network.
        let m = &batch.messages[3];
        let (offset, _) = m.elements[7];
        assert_eq!(m.net_at(offset), Some(m.nets[3]));
        assert_eq!(m.net_at(offset + 1), None);
    }

    #[test]
    fn wrong_family_and_bad_names_are_refused() {
        let mut c = change(NFPROTO_INET, "t", "s", Family::V4);
        c.add = nets(&["2400:cb00::/32"]);
        let err = encode_batch(0, &[c], true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "2400:cb00::/32 cannot go into inet t s: its key is ipv4"
        );
        let c = change(NFPROTO_INET, "t\0x", "s", Family::V4);
        assert!(matches!(
            encode_batch(0, &[c], true),
            Err(WireError::BadName(_))
        ));
    }

    #[test]
    fn acks_and_errors_decode() {
        // An ack: code 0 and the request's header.
        let mut p = 0i32.to_ne_bytes().to_vec();
        p.extend_from_slice(&[36, 0, 0, 0, 12, 10, 5, 4, 7, 0, 0, 0, 0, 0, 0, 0]);
        let ack = decode_ack(NLM_F_CAPPED, &p).unwrap();
        assert_eq!((ack.code, ack.seq, ack.offset), (0, 7, None));
        // An error with an extended ack pointing at offset 60.
        let mut p = (-17i32).to_ne_bytes().to_vec();
        p.extend_from_slice(&[200, 0, 0, 0, 12, 10, 5, 4, 9, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[8, 0, 2, 0]);
        p.extend_from_slice(&60u32.to_ne_bytes());
        let ack = decode_ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).unwrap();
        assert_eq!((ack.code, ack.seq, ack.offset), (-17, 9, Some(60)));
        assert!(decode_ack(0, &[1, 2]).is_err());
    }

    /// Random non-overlapping CIDRs of one family, many adjacent (drawn from a small space).
    fn disjoint(family: Family, raw: Vec<(u128, u8)>) -> Vec<IpNet> {
        let mut all: Vec<IpNet> = raw
            .into_iter()
            .map(|(bits, len)| match family {
                Family::V4 => {
                    let len = len % 33;
                    IpNet::V4(
                        Ipv4Net::new(Ipv4Addr::from(bits as u32), len)
                            .unwrap()
                            .trunc(),
                    )
                }
                Family::V6 => {
                    let len = len % 129;
                    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(bits), len).unwrap().trunc())
                }
            })
            .collect();
        all.sort();
        let mut out: Vec<IpNet> = Vec::new();
        for n in all {
            if !out.iter().any(|o| o.contains(&n) || n.contains(o)) {
                out.push(n);
            }
        }
        out
    }

    fn round_trip(family: Family, list: &[IpNet]) -> SetContents {
        let mut c = change(NFPROTO_INET, "t", "s", family);
        c.add = list.to_vec();
        let batch = encode_batch(1, &[c], true).unwrap();
        let mut elems = Vec::new();
        for m in split_messages(&batch.bytes).unwrap() {
            if m.ty == nft_type(NFT_MSG_NEWSETELEM) {
                elems.extend(decode_elements(m.payload).unwrap());
            }
        }
        // The kernel's order is not ours: reverse to be sure order does not matter.
        elems.reverse();
        intervals(family, &elems)
    }

    fn raw_nets() -> impl Strategy<Value = Vec<(u128, u8)>> {
        proptest::collection::vec(
            prop_oneof![
                // Crowded: adjacent and nested networks near 10.0.0.0 / 2400:: and at the top.
                (0u128..4096, 20u8..33).prop_map(|(x, l)| ((0x0a00_0000 + (x << 4)), l)),
                (0u128..64, 24u8..33).prop_map(|(x, l)| (u128::from(u32::MAX) - (x << 4), l)),
                any::<(u128, u8)>(),
            ],
            0..300,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), flags: u16) {
            if let Ok(msgs) = split_messages(&bytes) {
                for m in msgs {
                    let _ = decode_dump(m.payload);
                    let _ = decode_ack(m.flags, m.payload);
                }
            }
            let _ = decode_ack(flags, &bytes);
            if let Ok(d) = decode_dump(&bytes) {
                let _ = intervals(Family::V4, &d.elements);
                let _ = intervals(Family::V6, &d.elements);
            }
        }

        #[test]
        fn element_keys_of_any_shape_never_panic(
            elems in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..20), 0u32..4), 0..50)
        ) {
            let elems: Vec<RawElement> = elems.into_iter().map(|(key, flags)| RawElement { key, flags }).collect();
            let _ = intervals(Family::V4, &elems);
            let _ = intervals(Family::V6, &elems);
        }

        #[test]
        fn v4_round_trip(raw in raw_nets()) {
            let list = disjoint(Family::V4, raw);
            let got = round_trip(Family::V4, &list);
            prop_assert!(got.other.is_empty(), "{:?}", got.other);
            prop_assert_eq!(got.nets, list);
        }

        #[test]
        fn v6_round_trip(raw in raw_nets()) {
            // The crowded IPv4 patterns moved to the top 32 bits: adjacent /20../32 and ranges at the end.
            let raw = raw.into_iter().map(|(b, l)| (if b <= u128::from(u32::MAX) { b << 96 } else { b }, l)).collect();
            let list = disjoint(Family::V6, raw);
            let got = round_trip(Family::V6, &list);
            prop_assert!(got.other.is_empty(), "{:?}", got.other);
            prop_assert_eq!(got.nets, list);
        }
    }
}
