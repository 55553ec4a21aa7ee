//! The nfnetlink socket: reads the elements of our sets and applies element changes from our own
//! process, without spawning `nft` (which re-reads a 60,000-element set for every change and takes
//! 0.6 s and ~95 MB to list one). The messages are built and parsed in [`crate::wire`].
//!
//! Every change is one batch sent with one `sendmsg`: the kernel runs a batch as one transaction
//! per datagram, so a batch split over two sends would be two transactions. A batch without its
//! closing BATCH_END is validated and then aborted by the kernel, which is our dry run.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cfa_core::Family;
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use rustix::net::{RecvFlags, SendFlags};

use crate::wire::{
    decode_ack, decode_dump, encode_batch, encode_get_elements, intervals, nft_type, set_ref,
    split_messages, Op, SetChange, SetContents, WireError, NFT_MSG_NEWSETELEM, NLMSG_DONE,
    NLMSG_ERROR, NLM_F_DUMP_INTR,
};

/// How long we wait for the kernel's answer before giving up. The kernel answers a batch before
/// our `sendmsg` returns and a dump in milliseconds: silence this long means something is wrong.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket's receive buffer: room for a whole batch's answers (they are all queued while the
/// kernel works through our `sendmsg`; an answer that finds no room is dropped). Forced as root.
const RECV_BUFFER: usize = 8 << 20;

/// Our read buffer. The kernel sizes dump datagrams to at most 32 KiB; an error that echoes a
/// request is capped (`NETLINK_CAP_ACK`).
const DATAGRAM: usize = 64 << 10;

/// How many times a dump is restarted when the set changes under it (`NLM_F_DUMP_INTR`).
const DUMP_ATTEMPTS: usize = 5;

/// Room the kernel wants in the send buffer beyond the datagram itself.
const SEND_OVERHEAD: usize = 32;

/// Why talking to nf_tables failed.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    /// The namespace name cannot name a file under `/run/netns`.
    #[error("invalid network namespace name {0:?}")]
    BadNetns(String),
    /// The namespace could not be entered (it does not exist, or we may not).
    #[error("entering network namespace {name} ({}): {source}", .path.display())]
    Netns {
        /// Its name.
        name: String,
        /// `/run/netns/NAME`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The socket could not be created or set up.
    #[error("opening a netfilter netlink socket ({step}): {source}")]
    Socket {
        /// What failed ("binding", "setting the receive timeout").
        step: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The request could not be encoded (a network of the wrong family, a bad name).
    #[error("cannot build the nftables request: {0}")]
    Encode(#[from] WireError),
    /// The batch is larger than the socket may send, and we may not raise the limit.
    #[error("{action}: the batch is {size} bytes, more than this socket may send at once ({limit} bytes; raising it needs CAP_NET_ADMIN)")]
    TooLarge {
        /// What was being done.
        action: String,
        /// The batch's size.
        size: usize,
        /// What the socket allows.
        limit: usize,
    },
    /// Sending failed.
    #[error("{action}: sending to the kernel: {source}")]
    Send {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Receiving failed. After a batch was sent, its outcome is then unknown.
    #[error("{action}: reading the kernel's answer: {source}")]
    Receive {
        /// What was being done.
        action: String,
        /// The cause (`ENOBUFS`: answers were dropped).
        #[source]
        source: io::Error,
    },
    /// The kernel did not answer in time.
    #[error("{action}: no answer from the kernel within {}s", .timeout.as_secs())]
    Timeout {
        /// What was being done.
        action: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The kernel's answer made no sense.
    #[error("{action}: cannot parse the kernel's answer: {source}")]
    Parse {
        /// What was being done.
        action: String,
        /// What was wrong with it.
        #[source]
        source: WireError,
    },
    /// The kernel refused a read.
    #[error("{action}: {source}")]
    Kernel {
        /// What was being done ("reading set inet cf_allowlist allow_v4").
        action: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the batch: nothing of it was applied.
    #[error("{}", rejected(*.check_only, .failures))]
    Rejected {
        /// Whether this was a dry run.
        check_only: bool,
        /// Every error the kernel reported, in batch order.
        failures: Vec<Failure>,
    },
}

/// One message of a batch that the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// "adding 10.0.0.0/24 to set inet cf_allowlist allow_v4".
    pub what: String,
    /// What the refused message did (`None`: the batch as a whole).
    pub op: Option<Op>,
    /// The errno.
    pub errno: i32,
    /// The kernel's own message (extended ack), rarely given by nf_tables.
    pub text: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.what,
            io::Error::from_raw_os_error(self.errno)
        )?;
        if let Some(text) = &self.text {
            write!(f, " ({text})")?;
        }
        // What the kernel's errno means for an interval set (nft says the same in its words).
        let hint = match self.errno {
            17 if self.op == Some(Op::Add) => Some("it overlaps an interval already in the set"),
            2 if self.op == Some(Op::Remove) => Some("the set does not hold it as written"),
            _ => None,
        };
        if let Some(hint) = hint {
            write!(f, ": {hint}")?;
        }
        Ok(())
    }
}

impl NlError {
    /// The errno of the first failure the kernel reported, if it refused something.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Rejected { failures, .. } => failures.first().map(|f| f.errno),
            NlError::Kernel { source, .. } | NlError::Netns { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// At most this many failures are spelled out in a message.
const SHOWN_FAILURES: usize = 5;

fn rejected(check_only: bool, failures: &[Failure]) -> String {
    let mut out = if check_only {
        "nftables would refuse the change: ".to_string()
    } else {
        "nftables refused the change (nothing was applied): ".to_string()
    };
    let shown: Vec<String> = failures
        .iter()
        .take(SHOWN_FAILURES)
        .map(Failure::to_string)
        .collect();
    out.push_str(&shown.join("; "));
    if failures.len() > SHOWN_FAILURES {
        out.push_str(&format!(
            "; and {} more errors",
            failures.len() - SHOWN_FAILURES
        ));
    }
    out
}

/// A netfilter netlink socket, in the host's network namespace or in a named one.
#[derive(Debug)]
pub struct Nfnl {
    socket: Socket,
    port: u32,
    seq: u32,
    buf: Vec<u8>,
}

impl Nfnl {
    /// Opens the socket. With `Some(name)` it is created in the network namespace
    /// `/run/netns/NAME` (as `ip netns exec NAME` would run a tool) by a short-lived thread that
    /// enters it; a socket stays in the namespace it was created in, and this thread and process
    /// stay where they were.
    pub fn open(netns: Option<&str>) -> Result<Nfnl, NlError> {
        let (socket, port) = match netns {
            None => new_socket()?,
            Some(name) => socket_in(name)?,
        };
        // nft starts from the time too: any value works, since the socket is ours alone.
        let seq = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Nfnl {
            socket,
            port,
            seq,
            buf: vec![0; DATAGRAM],
        })
    }

    /// The elements of set `set` in table `family table` (family from
    /// [`crate::wire::table_family`]), whose key is of family `key`; `None` when the table or
    /// the set does not exist.
    pub fn get_set(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
        key: Family,
    ) -> Result<Option<SetContents>, NlError> {
        let action = format!("reading set {}", set_ref(family, table, set));
        let build = |seq| encode_get_elements(seq, family, table, set);
        let Some(payloads) = self.query(build, nft_type(NFT_MSG_NEWSETELEM), true, &action)? else {
            return Ok(None);
        };
        let mut elements = Vec::new();
        for payload in &payloads {
            let dumped = decode_dump(payload).map_err(|source| NlError::Parse {
                action: action.clone(),
                source,
            })?;
            elements.extend(dumped.elements);
        }
        Ok(Some(intervals(key, &elements)))
    }

    /// Sends the request `build(seq)` makes and collects the payloads (after the netlink header)
    /// of the answers of type `reply`: a dump (`dump`) until its DONE, restarted when the kernel
    /// flags it interrupted; a single request (sent with `NLM_F_ACK`) until its ack. `None` when
    /// the kernel answers ENOENT (the table, chain or set does not exist).
    pub(crate) fn query(
        &mut self,
        build: impl Fn(u32) -> Vec<u8>,
        reply: u16,
        dump: bool,
        action: &str,
    ) -> Result<Option<Vec<Vec<u8>>>, NlError> {
        let parse = |source| NlError::Parse {
            action: action.to_string(),
            source,
        };
        let kernel = |errno: i32| NlError::Kernel {
            action: action.to_string(),
            source: io::Error::from_raw_os_error(errno),
        };
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.take_seqs(1);
            self.send(&build(seq), action)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            'answer: loop {
                let n = self.recv(false, action)?.unwrap_or(0);
                let msgs = split_messages(&self.buf[..n]).map_err(parse)?;
                for m in msgs {
                    if m.seq != seq || m.port != self.port {
                        continue;
                    }
                    interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                    match m.ty {
                        NLMSG_DONE => {
                            let code = m
                                .payload
                                .get(..4)
                                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                                .map_or(0, i32::from_ne_bytes);
                            if code < 0 {
                                return Err(kernel(-code));
                            }
                            break 'answer;
                        }
                        NLMSG_ERROR => {
                            let ack = decode_ack(m.flags, m.payload).map_err(parse)?;
                            if ack.code == 0 {
                                if dump {
                                    continue;
                                }
                                break 'answer;
                            }
                            if -ack.code == rustix::io::Errno::NOENT.raw_os_error() {
                                return Ok(None);
                            }
                            return Err(kernel(-ack.code));
                        }
                        ty if ty == reply => out.push(m.payload.to_vec()),
                        _ => {}
                    }
                }
            }
            if !interrupted {
                return Ok(Some(out));
            }
            tracing::debug!(%action, "the ruleset changed during the dump; dumping again");
        }
        Err(NlError::Kernel {
            action: action.to_string(),
            source: io::Error::other(format!(
                "the ruleset kept changing during {DUMP_ATTEMPTS} dumps"
            )),
        })
    }

    /// Applies `changes` as one transaction, or with `check_only` has the kernel validate them
    /// and abort (nothing changes either way then). Every message of the batch gets an answer;
    /// every error is collected, each naming its operation, set and element.
    pub fn commit(&mut self, changes: &[SetChange], check_only: bool) -> Result<(), NlError> {
        let batch = encode_batch(self.seq, changes, !check_only)?;
        self.seq = batch.next_seq;
        if batch.messages.is_empty() {
            return Ok(());
        }
        let action = describe(changes, check_only);
        self.ensure_send_buffer(batch.bytes.len(), &action)?;
        self.send(&batch.bytes, &action)?;
        // From here on a failure to hear the answers leaves the outcome unknown.
        let described = action.clone();
        let action = if check_only {
            action
        } else {
            format!("{action} (the batch was sent; read the sets back to learn whether it applied)")
        };

        let first = batch.seqs[0];
        let mut answered = vec![false; batch.messages.len()];
        let mut remaining = batch.messages.len();
        let mut failures = Vec::new();
        let mut whole = None;
        while remaining > 0 {
            // After an error about the batch as a whole, read only what is already queued: the
            // kernel may have dropped the other answers.
            let n = match self.recv(whole.is_some(), &action)? {
                Some(n) => n,
                None => break,
            };
            let msgs = split_messages(&self.buf[..n]).map_err(|source| NlError::Parse {
                action: action.clone(),
                source,
            })?;
            for m in msgs {
                if m.ty != NLMSG_ERROR || m.port != self.port {
                    continue;
                }
                let ack = decode_ack(m.flags, m.payload).map_err(|source| NlError::Parse {
                    action: action.clone(),
                    source,
                })?;
                if m.seq == batch.begin_seq {
                    if ack.code != 0 {
                        whole = Some(Failure {
                            what: described.clone(),
                            op: None,
                            errno: -ack.code,
                            text: ack.text,
                        });
                    }
                    continue;
                }
                let i = m.seq.wrapping_sub(first) as usize;
                if i >= answered.len() || answered[i] {
                    continue;
                }
                answered[i] = true;
                remaining -= 1;
                if ack.code != 0 {
                    let sent = &batch.messages[i];
                    let net = ack.offset.and_then(|o| sent.net_at(o));
                    failures.push((
                        i,
                        Failure {
                            what: sent.describe(net),
                            op: Some(sent.op),
                            errno: -ack.code,
                            text: ack.text,
                        },
                    ));
                }
            }
        }
        failures.sort_by_key(|(i, _)| *i);
        let mut failures: Vec<Failure> = failures.into_iter().map(|(_, f)| f).collect();
        if let Some(f) = whole {
            failures.insert(0, f);
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(NlError::Rejected {
                check_only,
                failures,
            })
        }
    }

    /// Reserves `n` consecutive sequence numbers; returns the first.
    fn take_seqs(&mut self, n: u32) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(n);
        first
    }

    /// Makes the send buffer hold a datagram of `size` bytes: forced as root (the default limit,
    /// `wmem_max`, is ~200 KiB, and 60,000 CIDRs make a ~2.6 MB batch), else as far as allowed.
    fn ensure_send_buffer(&self, size: usize, action: &str) -> Result<(), NlError> {
        let have = |s: &Socket| rustix::net::sockopt::socket_send_buffer_size(s).unwrap_or(0);
        if have(&self.socket) >= size + SEND_OVERHEAD {
            return Ok(());
        }
        // The kernel doubles the value it is given.
        let want = (size + SEND_OVERHEAD).div_ceil(2) + 4096;
        if rustix::net::sockopt::set_socket_send_buffer_size_force(&self.socket, want).is_err() {
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(&self.socket, want);
        }
        let limit = have(&self.socket);
        if limit < size + SEND_OVERHEAD {
            return Err(NlError::TooLarge {
                action: action.to_string(),
                size,
                limit: limit.saturating_sub(SEND_OVERHEAD),
            });
        }
        Ok(())
    }

    fn send(&self, bytes: &[u8], action: &str) -> Result<(), NlError> {
        let err = |source: io::Error| NlError::Send {
            action: action.to_string(),
            source,
        };
        loop {
            match rustix::net::send(&self.socket, bytes, SendFlags::empty()) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(err(io::Error::other(format!(
                        "only {n} of {} bytes were sent",
                        bytes.len()
                    ))))
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(err(e.into())),
            }
        }
    }

    /// Reads one datagram into `self.buf`; returns its length. With `nonblocking`, `None` when
    /// nothing is queued.
    fn recv(&mut self, nonblocking: bool, action: &str) -> Result<Option<usize>, NlError> {
        let flags = if nonblocking {
            RecvFlags::TRUNC | RecvFlags::DONTWAIT
        } else {
            RecvFlags::TRUNC
        };
        loop {
            match rustix::net::recv(&self.socket, &mut self.buf[..], flags) {
                Ok((n, full)) if full > n => {
                    return Err(NlError::Receive {
                        action: action.to_string(),
                        source: io::Error::other(format!(
                            "a {full}-byte datagram did not fit in {n} bytes"
                        )),
                    })
                }
                Ok((n, _)) => return Ok(Some(n)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) if nonblocking => return Ok(None),
                Err(rustix::io::Errno::AGAIN) => {
                    return Err(NlError::Timeout {
                        action: action.to_string(),
                        timeout: RECV_TIMEOUT,
                    })
                }
                Err(e) => {
                    return Err(NlError::Receive {
                        action: action.to_string(),
                        source: e.into(),
                    })
                }
            }
        }
    }
}

/// "applying element changes to set inet t s" / "checking ... to sets inet t s, inet t s6".
fn describe(changes: &[SetChange], check_only: bool) -> String {
    let verb = if check_only { "checking" } else { "applying" };
    let mut sets: Vec<String> = changes.iter().map(SetChange::set_ref).collect();
    sets.dedup();
    let noun = if sets.len() == 1 { "set" } else { "sets" };
    format!("{verb} element changes to {noun} {}", sets.join(", "))
}

/// Creates and sets up the socket in the current thread's namespace; returns it and its port id.
fn new_socket() -> Result<(Socket, u32), NlError> {
    let step = |step: &'static str| move |source: io::Error| NlError::Socket { step, source };
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(step("creating"))?;
    let addr = socket.bind_auto().map_err(step("binding"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(step("connecting to the kernel"))?;
    // Errors echo only the request's header, not a 48 KiB element list; and say which element
    // failed (extended ack: the offset of the offending attribute).
    socket
        .set_cap_ack(true)
        .map_err(step("setting NETLINK_CAP_ACK"))?;
    socket
        .set_ext_ack(true)
        .map_err(step("setting NETLINK_EXT_ACK"))?;
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, RECV_BUFFER).is_err() {
        rustix::net::sockopt::set_socket_recv_buffer_size(&socket, RECV_BUFFER)
            .map_err(|e| step("setting the receive buffer")(e.into()))?;
    }
    rustix::net::sockopt::set_socket_timeout(
        &socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(RECV_TIMEOUT),
    )
    .map_err(|e| step("setting the receive timeout")(e.into()))?;
    Ok((socket, addr.port_number()))
}

/// Creates the socket in network namespace `name`, from a thread that enters it and ends.
fn socket_in(name: &str) -> Result<(Socket, u32), NlError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(NlError::BadNetns(name.to_string()));
    }
    let path = PathBuf::from("/run/netns").join(name);
    let netns_err = |source: io::Error| NlError::Netns {
        name: name.to_string(),
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(netns_err)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|e| netns_err(e.into()))?;
                new_socket()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(netns_err(io::Error::other(
                    "the thread entering it panicked",
                )))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_names_every_failure_and_errno() {
        let f = |what: &str, errno| Failure {
            what: what.to_string(),
            op: Some(if errno == 17 { Op::Add } else { Op::Remove }),
            errno,
            text: None,
        };
        let err = NlError::Rejected {
            check_only: false,
            failures: vec![
                f(
                    "adding 10.0.0.0/24 (and 3 more) to set inet cf_allowlist allow_v4",
                    17,
                ),
                f(
                    "deleting 10.9.9.0/24 from set inet cf_allowlist allow_v4",
                    2,
                ),
            ],
        };
        assert_eq!(
            err.to_string(),
            "nftables refused the change (nothing was applied): adding 10.0.0.0/24 (and 3 more) \
             to set inet cf_allowlist allow_v4: File exists (os error 17): it overlaps an interval already \
             in the set; deleting 10.9.9.0/24 from set inet cf_allowlist allow_v4: No such file or \
             directory (os error 2): the set does not hold it as written"
        );
        assert_eq!(err.errno(), Some(17));
        let many = NlError::Rejected {
            check_only: true,
            failures: (0..7).map(|i| f(&format!("op {i}"), 22)).collect(),
        };
        let text = many.to_string();
        assert!(
            text.starts_with("nftables would refuse the change: op 0: "),
            "{text}"
        );
        assert!(text.ends_with("; and 2 more errors"), "{text}");
    }

    #[test]
    fn bad_namespace_names_are_refused_before_any_io() {
        for name in ["", "a/b", "..", "."] {
            assert!(matches!(Nfnl::open(Some(name)), Err(NlError::BadNetns(_))));
        }
    }
}
