//! The fast path: our table's structure (table, chains, sets, the rules of our chain) read over
//! netlink, so that a sync whose structure is current runs no `nft` at all. nft 1.0.6 fetches
//! every set's elements even for `nft -j -t list table` (0.35 s and ~70 MB with 60,000 ranges).
//!
//! This path can only *confirm*. It builds the [`NftTable`] that [`crate::parse_table`] would
//! have built from `nft -j` for the same kernel state only when everything it decodes is exactly
//! what we write (in an operator's table: our tagged rules and our sets, wherever they are). Any
//! attribute, expression, flag or type it does not know, or that differs from what nft 1.0.6
//! generates for our rules, is [`Quick::Unsure`], and the backend asks `nft -j` instead, which
//! stays the authority. A false `Table` hiding a difference is the one bug that matters here.
//!
//! The bytecode nft generates for our rule shapes (`nft --debug=netlink`), for
//! `tcp dport { 80, 443 } ip saddr @allow_v4 accept` in an inet table:
//!
//! ```text
//! [ meta load l4proto => reg 1 ]  [ cmp eq reg 1 0x06 ]
//! [ payload load 2b @ transport header + 2 => reg 1 ]  [ lookup reg 1 set __set0 ]
//! [ meta load nfproto => reg 1 ]  [ cmp eq reg 1 0x02 ]          (inet tables only)
//! [ payload load 4b @ network header + 12 => reg 1 ]  [ lookup reg 1 set allow_v4 ]
//! [ immediate reg 0 accept ]
//! ```
//!
//! One port is a `cmp eq` instead of the anonymous set; both protocols are a lookup in the
//! anonymous set `{ tcp, udp }` instead of the `cmp`; `!= @set drop` is a lookup with the invert
//! flag and an `immediate drop`. The dumps are taken between two reads of the ruleset's
//! generation; when it changed in between, they are taken again.

use std::collections::{BTreeMap, BTreeSet};

use cfa_core::{Family, Protocol, RULE_COMMENT};

use crate::netlink::{Nfnl, NlError};
use crate::parse::{NftChain, NftRule, NftSet, NftTable};
use crate::script::{rules, set_type};
use crate::wire::{
    attrs, begin_message, c_string, decode_dump, encode_get_elements, end_message, nft_type,
    put_str, table_family, RawElement, NFT_MSG_NEWSETELEM, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use crate::{Layout, CHAIN_PRIORITY};

const NFT_MSG_NEWTABLE: u8 = 0;
const NFT_MSG_GETTABLE: u8 = 1;
const NFT_MSG_NEWCHAIN: u8 = 3;
const NFT_MSG_GETCHAIN: u8 = 4;
const NFT_MSG_NEWRULE: u8 = 6;
const NFT_MSG_GETRULE: u8 = 7;
const NFT_MSG_NEWSET: u8 = 9;
const NFT_MSG_GETSET: u8 = 10;
const NFT_MSG_NEWGEN: u8 = 15;
const NFT_MSG_GETGEN: u8 = 16;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_TABLE_USE: u16 = 3;
const NFTA_TABLE_HANDLE: u16 = 4;
const NFTA_TABLE_PAD: u16 = 5;
const NFTA_TABLE_USERDATA: u16 = 6;

const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_HANDLE: u16 = 2;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_USE: u16 = 6;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_CHAIN_PAD: u16 = 9;
const NFTA_CHAIN_FLAGS: u16 = 10;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFT_CHAIN_BASE: u32 = 1;

const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_PAD: u16 = 14;
const NFTA_SET_HANDLE: u16 = 16;
/// The kernel's backend for the set (`rbtree`, `hash`, ...), dumped by recent kernels.
const NFTA_SET_TYPE: u16 = 19;
/// How many elements the set holds, dumped by recent kernels.
const NFTA_SET_COUNT: u16 = 20;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
/// nft's set userdata: the key's byte order (`NFTNL_UDATA_SET_KEYBYTEORDER`).
const UDATA_SET_KEYBYTEORDER: u8 = 0;
/// nft's set userdata: the expression the key is the type of (`NFTNL_UDATA_SET_KEY_TYPEOF`),
/// which nft writes for the anonymous sets of our rules and reads only to print them.
const UDATA_SET_KEY_TYPEOF: u8 = 3;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_POSITION: u16 = 6;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_RULE_PAD: u16 = 8;
/// nft's rule userdata: the comment (`NFTNL_UDATA_RULE_COMMENT`).
const UDATA_RULE_COMMENT: u8 = 0;

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_GEN_ID: u16 = 1;

/// nft's datatypes as set key types.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;

const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_LOOKUP_F_INV: u32 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// `NFT_REG_1` as the kernel dumps it; verdicts go to register 0.
const REG_1: u32 = 1;

/// The "typeof" userdata nft 1.0.6 writes for the anonymous set of `tcp dport { .. }`: TLVs
/// naming the payload expression (type 7), of protocol `desc` (nft's `PROTO_DESC_*`: 8 tcp,
/// 6 udp, 11 th) and field 2 (dport).
fn typeof_dport(desc: u8) -> Vec<u8> {
    vec![
        0x00, 0x04, 0x07, 0x00, 0x00, 0x00, 0x01, 0x0c, 0x00, 0x04, desc, 0x00, 0x00, 0x00, 0x01,
        0x04, 0x02, 0x00, 0x00, 0x00,
    ]
}

/// The same for `meta l4proto { tcp, udp }`: the meta expression (type 9) of key 16 (l4proto).
fn typeof_l4proto() -> Vec<u8> {
    vec![
        0x00, 0x04, 0x09, 0x00, 0x00, 0x00, 0x01, 0x06, 0x00, 0x04, 0x10, 0x00, 0x00, 0x00,
    ]
}

/// The signature of an operator's rule we did not decode: it can never equal one of ours.
pub(crate) const NOT_OURS: &str = "<not ours>";

/// How many times the dumps are retaken when the ruleset changes under them.
const GEN_ATTEMPTS: usize = 3;

/// What the fast path found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Quick {
    /// The table does not exist.
    Absent,
    /// Everything decoded is what we write: the table as [`crate::parse_table`] would read it
    /// (without elements).
    Table(NftTable),
    /// Something this path does not decode or that differs from what we write: ask `nft -j`.
    Unsure(String),
}

/// What the kernel answered, as message payloads (nfgenmsg and attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Dumps {
    /// The NEWTABLE answer; `None` when the table does not exist.
    pub table: Option<Vec<u8>>,
    /// NEWCHAIN messages.
    pub chains: Vec<Vec<u8>>,
    /// NEWSET messages.
    pub sets: Vec<Vec<u8>>,
    /// NEWRULE messages.
    pub rules: Vec<Vec<u8>>,
    /// The elements of the anonymous sets our rules look up, by set name.
    pub elements: BTreeMap<String, Vec<RawElement>>,
}

/// Reads the structure of `layout`'s table over `nl`.
pub(crate) fn read(nl: &mut Nfnl, layout: &Layout) -> Result<Quick, NlError> {
    let Some(family) = table_family(&layout.family) else {
        return Ok(Quick::Unsure(format!(
            "table family {:?} is not one we read",
            layout.family
        )));
    };
    for _ in 0..GEN_ATTEMPTS {
        let before = generation(nl)?;
        let dumps = fetch(nl, family, layout)?;
        if dumps.table.is_none() {
            return Ok(Quick::Absent);
        }
        if generation(nl)? == before {
            return Ok(assemble(layout, &dumps));
        }
        tracing::debug!("the ruleset changed while its structure was read; reading again");
    }
    Ok(Quick::Unsure(format!(
        "the ruleset kept changing during {GEN_ATTEMPTS} reads"
    )))
}

fn request(seq: u32, msg: u8, flags: u16, family: u8, strs: &[(u16, &str)]) -> Vec<u8> {
    let mut buf = Vec::new();
    let start = begin_message(&mut buf, nft_type(msg), flags, seq, family, 0);
    for (ty, value) in strs {
        put_str(&mut buf, *ty, value);
    }
    end_message(&mut buf, start);
    buf
}

/// The ruleset's generation id (it changes with every committed transaction).
fn generation(nl: &mut Nfnl) -> Result<Option<u32>, NlError> {
    let answers = nl.query(
        |seq| request(seq, NFT_MSG_GETGEN, NLM_F_REQUEST | NLM_F_ACK, 0, &[]),
        nft_type(NFT_MSG_NEWGEN),
        false,
        "reading the nftables generation",
    )?;
    Ok(answers
        .unwrap_or_default()
        .first()
        .and_then(|p| fields(p.get(4..)?).ok())
        .and_then(|f| be32(f.get(&NFTA_GEN_ID)?).ok()))
}

fn fetch(nl: &mut Nfnl, family: u8, layout: &Layout) -> Result<Dumps, NlError> {
    let t = layout.table.as_str();
    let what = |thing: &str| {
        format!(
            "reading the {thing} of nftables table {}",
            layout.table_ref()
        )
    };
    let dump = NLM_F_REQUEST | NLM_F_DUMP;
    let Some(table) = nl.query(
        |seq| {
            request(
                seq,
                NFT_MSG_GETTABLE,
                NLM_F_REQUEST | NLM_F_ACK,
                family,
                &[(NFTA_TABLE_NAME, t)],
            )
        },
        nft_type(NFT_MSG_NEWTABLE),
        false,
        &format!("reading nftables table {}", layout.table_ref()),
    )?
    else {
        return Ok(Dumps::default());
    };
    let mut out = Dumps {
        // No answer but an ack would be odd: an empty payload then reads as Unsure.
        table: Some(table.into_iter().next().unwrap_or_default()),
        ..Dumps::default()
    };
    out.chains = nl
        .query(
            |seq| {
                request(
                    seq,
                    NFT_MSG_GETCHAIN,
                    dump,
                    family,
                    &[(NFTA_CHAIN_TABLE, t)],
                )
            },
            nft_type(NFT_MSG_NEWCHAIN),
            true,
            &what("chains"),
        )?
        .unwrap_or_default();
    out.sets = nl
        .query(
            |seq| request(seq, NFT_MSG_GETSET, dump, family, &[(NFTA_SET_TABLE, t)]),
            nft_type(NFT_MSG_NEWSET),
            true,
            &what("sets"),
        )?
        .unwrap_or_default();
    out.rules = nl
        .query(
            |seq| {
                request(
                    seq,
                    NFT_MSG_GETRULE,
                    dump,
                    family,
                    &[(NFTA_RULE_TABLE, t), (NFTA_RULE_CHAIN, &layout.chain)],
                )
            },
            nft_type(NFT_MSG_NEWRULE),
            true,
            &what("rules"),
        )?
        .unwrap_or_default();
    let anonymous: BTreeSet<String> = out
        .sets
        .iter()
        .filter_map(|p| decode_set(p).ok())
        .filter(|s| s.table == layout.table && s.flags & NFT_SET_ANONYMOUS != 0)
        .map(|s| s.name)
        .collect();
    for name in looked_up(layout, &out.rules) {
        if !anonymous.contains(&name) {
            continue;
        }
        let action = format!("reading set {} {name}", layout.table_ref());
        let Some(payloads) = nl.query(
            |seq| encode_get_elements(seq, family, t, &name),
            nft_type(NFT_MSG_NEWSETELEM),
            true,
            &action,
        )?
        else {
            continue;
        };
        let mut elements = Vec::new();
        for p in payloads {
            match decode_dump(&p) {
                Ok(d) => elements.extend(d.elements),
                // Undecodable elements: leave the set without them, which reads as Unsure.
                Err(_) => {
                    elements.clear();
                    break;
                }
            }
        }
        out.elements.insert(name, elements);
    }
    Ok(out)
}

/// The sets that the rules we would judge (all in our table, our tagged ones in an operator's)
/// look up.
fn looked_up(layout: &Layout, rules: &[Vec<u8>]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in rules {
        let Ok(rule) = decode_rule(p) else { continue };
        if !layout.owned && rule.comment.as_deref() != Some(RULE_COMMENT) {
            continue;
        }
        for expr in rule.exprs.iter().flatten() {
            if let Expr::Lookup { set, .. } = expr {
                out.insert(set.clone());
            }
        }
    }
    out
}

/// Why the fast path cannot confirm (the text of [`Quick::Unsure`]).
type Check<T> = Result<T, String>;

/// Judges what the kernel answered (pure: the unit tests feed it captured bytes).
pub(crate) fn assemble(layout: &Layout, dumps: &Dumps) -> Quick {
    match build(layout, dumps) {
        Ok(None) => Quick::Absent,
        Ok(Some(t)) => Quick::Table(t),
        Err(why) => Quick::Unsure(why),
    }
}

fn build(layout: &Layout, d: &Dumps) -> Check<Option<NftTable>> {
    let Some(table) = &d.table else {
        return Ok(None);
    };
    let table_use = check_table(layout, table)?;
    let mut out = NftTable::default();
    let mut objects: u32 = 0;

    let mut anonymous: BTreeMap<String, DecodedSet> = BTreeMap::new();
    for p in &d.sets {
        let set = decode_set(p)?;
        if set.table != layout.table {
            continue;
        }
        if set.flags & NFT_SET_ANONYMOUS != 0 {
            // A rule's anonymous set does not count in the table's use once bound.
            anonymous.insert(set.name.clone(), set);
            continue;
        }
        objects += 1;
        let ours = Family::ALL
            .into_iter()
            .find(|f| layout.set_name(*f) == set.name);
        let parsed = match ours {
            Some(family) => {
                check_our_set(&set, family)?;
                NftSet {
                    kind: set_type(family).to_string(),
                    flags: vec!["interval".to_string()],
                    ..NftSet::default()
                }
            }
            // Someone else's set: its name is all `inspect` looks at.
            None => NftSet {
                kind: NOT_OURS.to_string(),
                ..NftSet::default()
            },
        };
        if out.sets.insert(set.name.clone(), parsed).is_some() {
            return Err(format!("set {} is listed twice", set.name));
        }
    }

    for p in &d.chains {
        let chain = decode_chain(p)?;
        if chain.table != layout.table {
            continue;
        }
        objects += 1;
        let base = if chain.name == layout.chain && layout.owned {
            let want = format!("filter hook input prio {CHAIN_PRIORITY} policy accept");
            match &chain.base {
                Ok(b) if *b == want && chain.pristine => b.clone(),
                Ok(b) => {
                    return Err(format!(
                        "chain {} is `{b}`{}, not what we write",
                        chain.name,
                        if chain.pristine {
                            ""
                        } else {
                            " with attributes we do not write"
                        }
                    ))
                }
                Err(why) => return Err(format!("chain {}: {why}", chain.name)),
            }
        } else {
            // Not judged by `inspect` beyond its name (an operator's chain, or an extra chain in
            // our table, which is reported as such).
            chain.base.unwrap_or_else(|_| NOT_OURS.to_string())
        };
        let entry = NftChain {
            base,
            rules: Vec::new(),
        };
        if out.chains.insert(chain.name.clone(), entry).is_some() {
            return Err(format!("chain {} is listed twice", chain.name));
        }
    }
    if layout.owned && table_use != Some(objects) {
        return Err(format!(
            "table {} holds {} objects but {objects} chains and named sets were listed \
             (flowtables or stateful objects?)",
            layout.table_ref(),
            table_use.map_or("an unknown number of".to_string(), |n| n.to_string())
        ));
    }

    let expected = expected_rules(layout);
    let signatures = rules(layout);
    for p in &d.rules {
        let rule = decode_rule(p)?;
        if rule.table != layout.table || rule.chain != layout.chain {
            continue;
        }
        let tagged = rule.comment.as_deref() == Some(RULE_COMMENT);
        let signature = if layout.owned || tagged {
            if !tagged {
                return Err(format!(
                    "rule handle {} in chain {} is not tagged {RULE_COMMENT:?}",
                    rule.handle, layout.chain
                ));
            }
            if !rule.pristine {
                return Err(format!(
                    "rule handle {} has attributes we do not write",
                    rule.handle
                ));
            }
            let exprs = rule
                .exprs
                .map_err(|why| format!("rule handle {}: {why}", rule.handle))?;
            let mut found = None;
            for (i, want) in expected.iter().enumerate() {
                if matches(&exprs, want, &anonymous, &d.elements)? {
                    found = Some(i);
                    break;
                }
            }
            match found.and_then(|i| signatures.get(i)) {
                Some(r) => r.signature.clone(),
                None => {
                    return Err(format!(
                        "rule handle {} is not one of the rules of this configuration",
                        rule.handle
                    ))
                }
            }
        } else {
            NOT_OURS.to_string()
        };
        out.chains
            .entry(rule.chain.clone())
            .or_default()
            .rules
            .push(NftRule {
                handle: rule.handle,
                comment: rule.comment,
                signature,
            });
    }
    Ok(Some(out))
}

/// The attributes of `buf` by type; a type twice is an error.
fn fields(buf: &[u8]) -> Check<BTreeMap<u16, &[u8]>> {
    let mut out = BTreeMap::new();
    for attr in attrs(buf) {
        let (ty, value) = attr.map_err(|e| e.to_string())?;
        if out.insert(ty, value).is_some() {
            return Err(format!("attribute {ty} appears twice"));
        }
    }
    Ok(out)
}

/// `fields` of a message payload (after its 4-byte nfgenmsg).
fn message<'a>(payload: &'a [u8], what: &str) -> Check<BTreeMap<u16, &'a [u8]>> {
    fields(
        payload
            .get(4..)
            .ok_or_else(|| format!("truncated {what} message"))?,
    )
}

/// The attribute types of `f` not in `known`, spelled for a message.
fn strays(f: &BTreeMap<u16, &[u8]>, known: &[u16]) -> Vec<String> {
    f.keys()
        .filter(|k| !known.contains(k))
        .map(|k| format!("attribute {k}"))
        .collect()
}

/// Whether `f` holds only attributes of the types in `known`.
fn only(f: &BTreeMap<u16, &[u8]>, known: &[u16]) -> bool {
    f.keys().all(|k| known.contains(k))
}

/// The first unknown attribute type of `f`, for a message.
fn unknown(f: &BTreeMap<u16, &[u8]>, known: &[u16], what: &str) -> Check<()> {
    match f.keys().find(|k| !known.contains(k)) {
        Some(k) => Err(format!("{what} has attribute {k}, which we do not decode")),
        None => Ok(()),
    }
}

fn be32(v: &[u8]) -> Check<u32> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_be_bytes)
        .map_err(|_| format!("a 32-bit value of {} bytes", v.len()))
}

fn be64(v: &[u8]) -> Check<u64> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| format!("a 64-bit value of {} bytes", v.len()))
}

fn get<'a>(f: &BTreeMap<u16, &'a [u8]>, ty: u16, what: &str) -> Check<&'a [u8]> {
    f.get(&ty)
        .copied()
        .ok_or_else(|| format!("{what} without attribute {ty}"))
}

/// Checks the table; returns its use count (chains, sets, objects and flowtables in it).
fn check_table(layout: &Layout, payload: &[u8]) -> Check<Option<u32>> {
    let f = message(payload, "table")?;
    let mut known = vec![
        NFTA_TABLE_NAME,
        NFTA_TABLE_FLAGS,
        NFTA_TABLE_USE,
        NFTA_TABLE_HANDLE,
        NFTA_TABLE_PAD,
    ];
    // An operator's table may carry a comment; ours never does.
    if !layout.owned {
        known.push(NFTA_TABLE_USERDATA);
    }
    unknown(&f, &known, "the table")?;
    let name = c_string(get(&f, NFTA_TABLE_NAME, "the table")?);
    if name != layout.table {
        return Err(format!("the kernel answered for table {name:?}"));
    }
    let flags = be32(get(&f, NFTA_TABLE_FLAGS, "the table")?)?;
    if flags != 0 {
        return Err(format!(
            "table {} has flags {flags:#x} (1: dormant, 2: owned by a process)",
            layout.table_ref()
        ));
    }
    f.get(&NFTA_TABLE_USE).map(|v| be32(v)).transpose()
}

#[derive(Debug)]
struct DecodedChain {
    table: String,
    name: String,
    /// `filter hook input prio -10 policy accept`, empty for a regular chain; `Err` when it
    /// cannot be rendered as `nft -j` would (devices, flags we do not know).
    base: Check<String>,
    /// No attribute beyond what nft writes for our chain (no comment, no counters).
    pristine: bool,
}

fn decode_chain(payload: &[u8]) -> Check<DecodedChain> {
    let f = message(payload, "chain")?;
    let table = c_string(get(&f, NFTA_CHAIN_TABLE, "a chain")?);
    let name = c_string(get(&f, NFTA_CHAIN_NAME, "a chain")?);
    let pristine = only(
        &f,
        &[
            NFTA_CHAIN_TABLE,
            NFTA_CHAIN_HANDLE,
            NFTA_CHAIN_NAME,
            NFTA_CHAIN_HOOK,
            NFTA_CHAIN_POLICY,
            NFTA_CHAIN_USE,
            NFTA_CHAIN_TYPE,
            NFTA_CHAIN_PAD,
            NFTA_CHAIN_FLAGS,
        ],
    );
    Ok(DecodedChain {
        table,
        name,
        base: chain_base(&f),
        pristine,
    })
}

fn chain_base(f: &BTreeMap<u16, &[u8]>) -> Check<String> {
    let flags = f.get(&NFTA_CHAIN_FLAGS).map(|v| be32(v)).transpose()?;
    let Some(hook) = f.get(&NFTA_CHAIN_HOOK) else {
        if flags.unwrap_or(0) != 0 {
            return Err(format!("a regular chain with flags {flags:?}"));
        }
        return Ok(String::new());
    };
    if flags != Some(NFT_CHAIN_BASE) {
        return Err(format!("a base chain with flags {flags:?}"));
    }
    let h = fields(hook)?;
    if !only(&h, &[NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY]) {
        return Err("a hook with a device or attributes we do not decode".to_string());
    }
    let hook = match be32(get(&h, NFTA_HOOK_HOOKNUM, "a hook")?)? {
        0 => "prerouting",
        1 => "input",
        2 => "forward",
        3 => "output",
        4 => "postrouting",
        n => return Err(format!("hook number {n}")),
    };
    let prio = be32(get(&h, NFTA_HOOK_PRIORITY, "a hook")?)? as i32;
    let kind = c_string(get(f, NFTA_CHAIN_TYPE, "a base chain")?);
    let policy = match be32(get(f, NFTA_CHAIN_POLICY, "a base chain")?)? {
        NF_ACCEPT => "accept",
        NF_DROP => "drop",
        n => return Err(format!("policy {n}")),
    };
    Ok(format!("{kind} hook {hook} prio {prio} policy {policy}"))
}

#[derive(Debug)]
struct DecodedSet {
    table: String,
    name: String,
    flags: u32,
    key_type: Option<u32>,
    key_len: Option<u32>,
    /// `NFTA_SET_DESC_SIZE`, when that is all the description holds.
    size: Option<u32>,
    /// nft's "typeof" userdata.
    typeof_key: Option<Vec<u8>>,
    /// What it holds beyond the attributes nft writes for our sets and rules' anonymous sets
    /// (userdata other than the key's byte order, a description other than a size).
    odd: Vec<String>,
}

fn decode_set(payload: &[u8]) -> Check<DecodedSet> {
    let f = message(payload, "set")?;
    let table = c_string(get(&f, NFTA_SET_TABLE, "a set")?);
    let name = c_string(get(&f, NFTA_SET_NAME, "a set")?);
    let flags = f
        .get(&NFTA_SET_FLAGS)
        .map(|v| be32(v))
        .transpose()?
        .unwrap_or(0);
    let key_type = f.get(&NFTA_SET_KEY_TYPE).and_then(|v| be32(v).ok());
    let key_len = f.get(&NFTA_SET_KEY_LEN).and_then(|v| be32(v).ok());
    let mut odd = strays(
        &f,
        &[
            NFTA_SET_TABLE,
            NFTA_SET_NAME,
            NFTA_SET_FLAGS,
            NFTA_SET_KEY_TYPE,
            NFTA_SET_KEY_LEN,
            NFTA_SET_DESC,
            NFTA_SET_USERDATA,
            NFTA_SET_PAD,
            NFTA_SET_HANDLE,
            NFTA_SET_TYPE,
            NFTA_SET_COUNT,
        ],
    );
    let mut size = None;
    let mut typeof_key = None;
    if let Some(desc) = f.get(&NFTA_SET_DESC) {
        match fields(desc) {
            Ok(d) if only(&d, &[NFTA_SET_DESC_SIZE]) => {
                size = d.get(&NFTA_SET_DESC_SIZE).and_then(|v| be32(v).ok());
            }
            _ => odd.push("a description beyond a size".to_string()),
        }
    }
    if let Some(udata) = f.get(&NFTA_SET_USERDATA) {
        match udata_tlvs(udata) {
            Some(t) => {
                for (ty, v) in t {
                    match ty {
                        UDATA_SET_KEYBYTEORDER => {}
                        UDATA_SET_KEY_TYPEOF if typeof_key.is_none() => {
                            typeof_key = Some(v.to_vec());
                        }
                        _ => odd.push(format!("userdata {ty} {v:02x?}")),
                    }
                }
            }
            None => odd.push("malformed userdata".to_string()),
        }
    }
    Ok(DecodedSet {
        table,
        name,
        flags,
        key_type,
        key_len,
        size,
        typeof_key,
        odd,
    })
}

/// nft's userdata: TLVs of a one-byte type and a one-byte length; `None` when malformed.
fn udata_tlvs(mut buf: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let ty = *buf.first()?;
        let len = usize::from(*buf.get(1)?);
        out.push((ty, buf.get(2..2 + len)?));
        buf = &buf[2 + len..];
    }
    Some(out)
}

fn check_our_set(set: &DecodedSet, family: Family) -> Check<()> {
    let (ty, len) = match family {
        Family::V4 => (TYPE_IPADDR, 4),
        Family::V6 => (TYPE_IP6ADDR, 16),
    };
    if set.odd.is_empty()
        && set.flags == NFT_SET_INTERVAL
        && set.key_type == Some(ty)
        && set.key_len == Some(len)
        && set.size.is_none()
        && set.typeof_key.is_none()
    {
        Ok(())
    } else {
        Err(format!(
            "set {} is not exactly the interval set of {} we write (flags {:#x}, key type {:?}, \
             key length {:?}{})",
            set.name,
            set_type(family),
            set.flags,
            set.key_type,
            set.key_len,
            if set.odd.is_empty() {
                String::new()
            } else {
                format!(", {}", set.odd.join(", "))
            }
        ))
    }
}

#[derive(Debug)]
struct DecodedRule {
    table: String,
    chain: String,
    handle: u64,
    comment: Option<String>,
    /// Only attributes nft writes for our rules, and userdata that is only a comment.
    pristine: bool,
    exprs: Check<Vec<Expr>>,
}

fn decode_rule(payload: &[u8]) -> Check<DecodedRule> {
    let f = message(payload, "rule")?;
    let table = c_string(get(&f, NFTA_RULE_TABLE, "a rule")?);
    let chain = c_string(get(&f, NFTA_RULE_CHAIN, "a rule")?);
    let handle = be64(get(&f, NFTA_RULE_HANDLE, "a rule")?)?;
    let mut pristine = only(
        &f,
        &[
            NFTA_RULE_TABLE,
            NFTA_RULE_CHAIN,
            NFTA_RULE_HANDLE,
            NFTA_RULE_EXPRESSIONS,
            NFTA_RULE_POSITION,
            NFTA_RULE_USERDATA,
            NFTA_RULE_PAD,
        ],
    );
    let mut comment = None;
    if let Some(udata) = f.get(&NFTA_RULE_USERDATA) {
        match udata_tlvs(udata) {
            Some(tlvs) => {
                for (ty, value) in tlvs {
                    if ty == UDATA_RULE_COMMENT && comment.is_none() {
                        comment = Some(c_string(value));
                    } else {
                        pristine = false;
                    }
                }
            }
            None => pristine = false,
        }
    }
    let exprs = match f.get(&NFTA_RULE_EXPRESSIONS) {
        Some(list) => decode_exprs(list),
        None => Ok(Vec::new()),
    };
    Ok(DecodedRule {
        table,
        chain,
        handle,
        comment,
        pristine,
        exprs,
    })
}

/// One expression of the kinds our rules use, with every attribute the kernel dumps for it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    /// `meta load KEY => reg DREG`
    Meta { key: u32, dreg: u32 },
    /// `cmp OP reg SREG DATA`
    Cmp { sreg: u32, op: u32, data: Vec<u8> },
    /// `payload load LEN b @ BASE + OFFSET => reg DREG`
    Payload {
        dreg: u32,
        base: u32,
        offset: u32,
        len: u32,
    },
    /// `lookup reg SREG set SET FLAGS`
    Lookup { set: String, sreg: u32, flags: u32 },
    /// `immediate reg 0 VERDICT`
    Verdict(u32),
}

fn decode_exprs(list: &[u8]) -> Check<Vec<Expr>> {
    let mut out = Vec::new();
    for item in attrs(list) {
        let (ty, item) = item.map_err(|e| e.to_string())?;
        if ty != NFTA_LIST_ELEM {
            return Err(format!("expression list item of type {ty}"));
        }
        let f = fields(item)?;
        unknown(&f, &[NFTA_EXPR_NAME, NFTA_EXPR_DATA], "an expression")?;
        let name = c_string(get(&f, NFTA_EXPR_NAME, "an expression")?);
        let data = fields(f.get(&NFTA_EXPR_DATA).copied().unwrap_or(&[]))?;
        out.push(decode_expr(&name, &data)?);
    }
    Ok(out)
}

/// Exactly the attributes `want` in `f`, as u32s in the order given.
fn exactly<const N: usize>(
    f: &BTreeMap<u16, &[u8]>,
    want: [u16; N],
    what: &str,
) -> Check<[u32; N]> {
    if f.len() != N || !only(f, &want) {
        return Err(format!(
            "expression {what} with attributes {:?}, not {want:?}",
            f.keys().collect::<Vec<_>>()
        ));
    }
    let mut out = [0; N];
    for (slot, ty) in out.iter_mut().zip(want) {
        *slot = be32(get(f, ty, what)?)?;
    }
    Ok(out)
}

fn decode_expr(name: &str, f: &BTreeMap<u16, &[u8]>) -> Check<Expr> {
    match name {
        "meta" => {
            // NFTA_META_DREG, NFTA_META_KEY
            let [dreg, key] = exactly(f, [1, 2], name)?;
            Ok(Expr::Meta { key, dreg })
        }
        "cmp" => {
            // NFTA_CMP_SREG, NFTA_CMP_OP, NFTA_CMP_DATA
            if f.len() != 3 || !only(f, &[1, 2, 3]) {
                return Err("expression cmp with attributes we do not decode".to_string());
            }
            let data = fields(get(f, 3, name)?)?;
            unknown(&data, &[NFTA_DATA_VALUE], "cmp data")?;
            Ok(Expr::Cmp {
                sreg: be32(get(f, 1, name)?)?,
                op: be32(get(f, 2, name)?)?,
                data: get(&data, NFTA_DATA_VALUE, "cmp data")?.to_vec(),
            })
        }
        "payload" => {
            // NFTA_PAYLOAD_DREG, _BASE, _OFFSET, _LEN
            let [dreg, base, offset, len] = exactly(f, [1, 2, 3, 4], name)?;
            Ok(Expr::Payload {
                dreg,
                base,
                offset,
                len,
            })
        }
        "lookup" => {
            // NFTA_LOOKUP_SET, _SREG, _FLAGS (no DREG: not a map)
            if f.len() != 3 || !only(f, &[1, 2, 5]) {
                return Err("expression lookup with attributes we do not decode".to_string());
            }
            Ok(Expr::Lookup {
                set: c_string(get(f, 1, name)?),
                sreg: be32(get(f, 2, name)?)?,
                flags: be32(get(f, 5, name)?)?,
            })
        }
        "immediate" => {
            // NFTA_IMMEDIATE_DREG (0: the verdict register), NFTA_IMMEDIATE_DATA
            if f.len() != 2 || !only(f, &[1, 2]) || be32(get(f, 1, name)?)? != 0 {
                return Err("expression immediate that is not a verdict".to_string());
            }
            let data = fields(get(f, 2, name)?)?;
            unknown(&data, &[NFTA_DATA_VERDICT], "immediate data")?;
            let verdict = fields(get(&data, NFTA_DATA_VERDICT, "immediate data")?)?;
            let [code] = exactly(&verdict, [NFTA_VERDICT_CODE], "verdict")?;
            Ok(Expr::Verdict(code))
        }
        other => Err(format!("expression {other:?}, which our rules do not use")),
    }
}

/// One expression we expect.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Is(Expr),
    /// A lookup in an anonymous constant set of key `key_type`/`key_len` holding `keys`.
    Anonymous {
        key_type: u32,
        key_len: u32,
        /// nft's "typeof" userdata for it.
        typeof_key: Vec<u8>,
        keys: BTreeSet<Vec<u8>>,
    },
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Udp => 17,
        _ => 6,
    }
}

/// The expressions nft 1.0.6 generates for each of `rules(layout)`, in the same order.
fn expected_rules(layout: &Layout) -> Vec<Vec<Want>> {
    let spec = &layout.spec;
    let reg = REG_1;
    let mut head = vec![Want::Is(Expr::Meta {
        key: NFT_META_L4PROTO,
        dreg: reg,
    })];
    match spec.protocol {
        Protocol::Both => head.push(Want::Anonymous {
            key_type: TYPE_INET_PROTOCOL,
            key_len: 1,
            typeof_key: typeof_l4proto(),
            keys: [vec![6], vec![17]].into_iter().collect(),
        }),
        p => head.push(Want::Is(Expr::Cmp {
            sreg: reg,
            op: NFT_CMP_EQ,
            data: vec![proto_number(p)],
        })),
    }
    if !spec.ports.is_empty() {
        head.push(Want::Is(Expr::Payload {
            dreg: reg,
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            offset: 2,
            len: 2,
        }));
        if let [port] = spec.ports.as_slice() {
            head.push(Want::Is(Expr::Cmp {
                sreg: reg,
                op: NFT_CMP_EQ,
                data: port.to_be_bytes().to_vec(),
            }));
        } else {
            head.push(Want::Anonymous {
                key_type: TYPE_INET_SERVICE,
                key_len: 2,
                typeof_key: typeof_dport(match spec.protocol {
                    Protocol::Tcp => 8,
                    Protocol::Udp => 6,
                    Protocol::Both => 11,
                }),
                keys: spec
                    .ports
                    .iter()
                    .map(|p| p.to_be_bytes().to_vec())
                    .collect(),
            });
        }
    }
    let mut out = Vec::new();
    for (negate, verdict) in [(false, NF_ACCEPT), (true, NF_DROP)] {
        if negate && !spec.restrict {
            continue;
        }
        for &family in &layout.families {
            let mut rule = head.clone();
            let (nfproto, offset, len) = match family {
                Family::V4 => (2u8, 12, 4),
                Family::V6 => (10u8, 8, 16),
            };
            if layout.family == "inet" {
                rule.push(Want::Is(Expr::Meta {
                    key: NFT_META_NFPROTO,
                    dreg: reg,
                }));
                rule.push(Want::Is(Expr::Cmp {
                    sreg: reg,
                    op: NFT_CMP_EQ,
                    data: vec![nfproto],
                }));
            }
            rule.push(Want::Is(Expr::Payload {
                dreg: reg,
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset,
                len,
            }));
            rule.push(Want::Is(Expr::Lookup {
                set: layout.set_name(family).to_string(),
                sreg: reg,
                flags: if negate { NFT_LOOKUP_F_INV } else { 0 },
            }));
            rule.push(Want::Is(Expr::Verdict(verdict)));
            out.push(rule);
        }
    }
    out
}

/// Whether `got` is `want`; an anonymous set that is looked up but not exactly what nft makes
/// of our rule is Unsure.
fn matches(
    got: &[Expr],
    want: &[Want],
    sets: &BTreeMap<String, DecodedSet>,
    elements: &BTreeMap<String, Vec<RawElement>>,
) -> Check<bool> {
    if got.len() != want.len() {
        return Ok(false);
    }
    for (g, w) in got.iter().zip(want) {
        match w {
            Want::Is(e) => {
                if g != e {
                    return Ok(false);
                }
            }
            Want::Anonymous {
                key_type,
                key_len,
                typeof_key,
                keys,
            } => {
                let Expr::Lookup { set, sreg, flags } = g else {
                    return Ok(false);
                };
                if *sreg != REG_1 || *flags != 0 {
                    return Ok(false);
                }
                let Some(s) = sets.get(set) else {
                    return Ok(false);
                };
                if !s.odd.is_empty()
                    || s.flags != NFT_SET_ANONYMOUS | NFT_SET_CONSTANT
                    || s.key_type != Some(*key_type)
                    || s.key_len != Some(*key_len)
                    || s.typeof_key.as_ref() != Some(typeof_key)
                    || s.size != Some(keys.len() as u32)
                {
                    return Err(format!(
                        "anonymous set {set} is not the one nft makes (flags {:#x}, key type \
                         {:?}, key length {:?}, size {:?}, typeof {:02x?} {})",
                        s.flags,
                        s.key_type,
                        s.key_len,
                        s.size,
                        s.typeof_key,
                        s.odd.join(", ")
                    ));
                }
                let elems = elements.get(set).map(Vec::as_slice).unwrap_or(&[]);
                let got_keys: BTreeSet<Vec<u8>> = elems.iter().map(|e| e.key.clone()).collect();
                if elems.iter().any(|e| e.flags != 0) || got_keys.len() != elems.len() {
                    return Err(format!(
                        "anonymous set {set} holds elements we do not write"
                    ));
                }
                if got_keys != *keys {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::split_messages;
    use cfa_core::RuleSpec;
    use proptest::prelude::*;

    const OWN_HEX: &str = include_str!("../tests/fixtures/netlink/structure_own.hex");
    const OWN_JSON: &str = include_str!("../tests/fixtures/netlink/structure_own.json");

    /// The answers nft received in a capture, sorted into what [`fetch`] collects.
    fn dumps(text: &str) -> Dumps {
        let mut d = Dumps::default();
        for line in text.lines().filter(|l| l.starts_with("recvmsg ")) {
            let hex = &line["recvmsg ".len()..];
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            for m in split_messages(&bytes).unwrap() {
                let p = m.payload.to_vec();
                match m.ty {
                    t if t == nft_type(NFT_MSG_NEWTABLE) => d.table = Some(p),
                    t if t == nft_type(NFT_MSG_NEWCHAIN) => d.chains.push(p),
                    t if t == nft_type(NFT_MSG_NEWSET) => d.sets.push(p),
                    t if t == nft_type(NFT_MSG_NEWRULE) => d.rules.push(p),
                    t if t == nft_type(NFT_MSG_NEWSETELEM) => {
                        let dumped = decode_dump(&p).unwrap();
                        d.elements
                            .entry(dumped.set)
                            .or_default()
                            .extend(dumped.elements);
                    }
                    _ => {}
                }
            }
        }
        d
    }

    fn layout(spec: RuleSpec) -> Layout {
        Layout {
            family: "inet".into(),
            table: "cf_allowlist".into(),
            chain: "input".into(),
            owned: true,
            families: spec.families.clone(),
            spec,
        }
    }

    fn restrict() -> RuleSpec {
        RuleSpec {
            restrict: true,
            ..RuleSpec::default()
        }
    }

    #[test]
    fn captured_dumps_read_as_nft_json_reads_them() {
        let d = dumps(OWN_HEX);
        assert!(d.table.is_some() && !d.rules.is_empty() && d.elements.len() >= 4);
        let json = crate::parse_table(OWN_JSON, "cf_allowlist").unwrap();
        assert_eq!(
            assemble(&layout(restrict()), &d),
            Quick::Table(json.clone())
        );
        let live = crate::script::inspect(&layout(restrict()), &json);
        assert_eq!(live.structure, cfa_core::Structure::Current);
        // Another configuration: still the table as it is, which `inspect` then calls outdated.
        let other = RuleSpec {
            ports: vec![443],
            restrict: true,
            ..RuleSpec::default()
        };
        assert!(matches!(assemble(&layout(other), &d), Quick::Unsure(_)));
        assert_eq!(
            assemble(&layout(restrict()), &Dumps::default()),
            Quick::Absent
        );
    }

    /// Finds `needle` in `hay` once.
    fn find(hay: &[u8], needle: &[u8]) -> usize {
        let at: Vec<usize> = (0..=hay.len() - needle.len())
            .filter(|i| &hay[*i..*i + needle.len()] == needle)
            .collect();
        assert_eq!(at.len(), 1, "{needle:02x?} once");
        at[0]
    }

    #[test]
    fn one_changed_attribute_is_unsure() {
        let base = dumps(OWN_HEX);
        let l = layout(restrict());
        // A rule's accept verdict (NFTA_VERDICT_CODE 1) becomes a drop.
        let mut d = base.clone();
        let code = [0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01];
        // (the verdict is the last expression; registers 1 look alike before it)
        let at = (0..d.rules[0].len() - 8)
            .rev()
            .find(|i| d.rules[0][*i..*i + 8] == code)
            .unwrap();
        d.rules[0][at + 7] = 0;
        assert!(matches!(assemble(&l, &d), Quick::Unsure(_)), "verdict");
        // The first rule's lookup of allow_v4 gets the invert flag.
        let mut d = base.clone();
        let flags = [0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00];
        let first = (0..d.rules[0].len() - 8)
            .find(|i| d.rules[0][*i..*i + 8] == flags)
            .unwrap();
        let last = (0..d.rules[0].len() - 8)
            .rev()
            .find(|i| d.rules[0][*i..*i + 8] == flags)
            .unwrap();
        assert_ne!(first, last, "two lookups: ports, then the address set");
        d.rules[0][last + 7] = 1;
        assert!(matches!(assemble(&l, &d), Quick::Unsure(_)), "invert");
        // The table turns dormant.
        let mut d = base.clone();
        let table = d.table.as_mut().unwrap();
        let flags_attr = [0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00];
        let at = find(table, &flags_attr);
        table[at + 7] = 1;
        match assemble(&l, &d) {
            Quick::Unsure(why) => assert!(why.contains("dormant"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A set's flags gain "timeout".
        let mut d = base.clone();
        let interval = [0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x04];
        let at = find(&d.sets[0], &interval);
        d.sets[0][at + 7] = 0x14;
        assert!(matches!(assemble(&l, &d), Quick::Unsure(_)), "set flags");
        // A port in an anonymous set changes.
        let mut d = base.clone();
        for elems in d.elements.values_mut() {
            for e in elems.iter_mut() {
                if e.key == 443u16.to_be_bytes() {
                    e.key = 444u16.to_be_bytes().to_vec();
                }
            }
        }
        assert!(matches!(assemble(&l, &d), Quick::Unsure(_)), "port");
        // An unknown attribute appended to a rule.
        let mut d = base;
        d.rules[1].extend_from_slice(&[0x08, 0x00, 0x05, 0x00, 0, 0, 0, 0]);
        assert!(matches!(assemble(&l, &d), Quick::Unsure(_)), "compat");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn arbitrary_bytes_never_panic(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..6),
            owned in any::<bool>(),
        ) {
            let mut l = layout(restrict());
            l.owned = owned;
            let d = Dumps {
                table: parts.first().cloned(),
                chains: parts.clone(),
                sets: parts.clone(),
                rules: parts.clone(),
                elements: BTreeMap::new(),
            };
            let _ = assemble(&l, &d);
            for p in &parts {
                let _ = decode_rule(p);
                let _ = decode_set(p);
                let _ = decode_chain(p);
            }
        }

        /// A captured dump with one byte changed never panics.
        #[test]
        fn mutated_captures_never_panic(which in 0usize..4, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut d = dumps(OWN_HEX);
            let l = layout(restrict());
            let target = match which {
                0 => d.table.as_mut().unwrap(),
                1 => &mut d.chains[0],
                2 => &mut d.sets[0],
                _ => &mut d.rules[0],
            };
            let i = at.index(target.len());
            target[i] = byte;
            let _ = assemble(&l, &d);
        }
    }
}
