//! A lab of hosts in network namespaces, joined by a bridge in a "switch" namespace.
//!
//! Every name is unique (`<tag><pid>x<counter>-<host>`), and [`Lab`]'s `Drop` kills the
//! processes it started and deletes its namespaces even when a test panics. Addresses are
//! whatever the caller gives: use the documentation ranges (192.0.2.0/24, 2001:db8::/32).

use std::{
    fs::File,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

static COUNTER: AtomicU32 = AtomicU32::new(0);
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM stop every lab wait with an error instead of killing the
/// process, so labs unwind and `Drop` removes their namespaces, processes and pins.
pub fn handle_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_interrupt as *const () as libc::sighandler_t) };
    }
}

fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Removes what labs of processes that no longer exist left behind (an interrupted run):
/// their namespaces, the processes inside them, and their pins.
fn remove_stale_labs() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        // Lab names are <letters><pid>x<counter>-<host>.
        let Some(prefix) = name.split('-').next() else {
            continue;
        };
        let digits: String = prefix
            .chars()
            .skip_while(|c| c.is_ascii_alphabetic())
            .take_while(char::is_ascii_digit)
            .collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if !prefix.contains('x') || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = run("ip", &["netns", "pids", name]) {
            for p in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) of a process left in a namespace of a dead lab.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        let _ = run("ip", &["netns", "del", name]);
        remove_pins(prefix);
    }
}

/// vipd's default pin root: the lab removes `<PIN_ROOT>/<lab prefix>-*` when dropped, so
/// name vipd instances `<lab prefix>-<host>`.
pub const PIN_ROOT: &str = vipd_common::maps::DEFAULT_PIN_ROOT;

/// One host: a network namespace with `eth0` plugged into the lab's bridge.
#[derive(Clone, Debug)]
pub struct Host {
    /// Short name given by the caller ("n1", "client").
    pub name: String,
    /// The network namespace's name.
    pub netns: String,
    /// The address on eth0, without prefix.
    pub addr: String,
    /// eth0's MAC address.
    pub mac: String,
}

/// A process started in a host.
pub struct Proc {
    /// The child; its stdout and stderr go to `log`.
    pub child: Child,
    /// Where its output is written.
    pub log: PathBuf,
}

impl Proc {
    /// Sends `sig` (e.g. `libc::SIGTERM`) to the process and its children (its own
    /// process group).
    pub fn signal(&self, sig: i32) -> anyhow::Result<()> {
        // SAFETY: kill(2) of a process group we created.
        if unsafe { libc::kill(-(self.child.id() as i32), sig) } != 0 {
            return Err(std::io::Error::last_os_error()).context(format!("kill({sig})"));
        }
        Ok(())
    }

    /// Waits (at most `timeout`) for the process to exit; returns whether it did, successfully.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.success());
            }
            if Instant::now() >= deadline {
                bail!(
                    "process {} did not exit within {timeout:?}",
                    self.child.id()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The output so far.
    pub fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits (at most `timeout`) for a line containing every one of `needles`; returns it.
    pub fn wait_for_line(&self, needles: &[&str], timeout: Duration) -> anyhow::Result<String> {
        let mut found = None;
        wait_until(
            &format!("a log line with {needles:?} in {}", self.log.display()),
            timeout,
            || {
                found = self
                    .output()
                    .lines()
                    .find(|l| needles.iter().all(|n| l.contains(n)))
                    .map(str::to_string);
                Ok(found.is_some())
            },
        )
        .with_context(|| format!("log so far:\n{}", self.output()))?;
        Ok(found.unwrap_or_default())
    }

    /// How many lines of the output so far contain every one of `needles`.
    pub fn count_lines(&self, needles: &[&str]) -> usize {
        self.output()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits (at most `timeout`) until at least `count` lines contain every one of
    /// `needles` (e.g. the second time a state is entered); returns the `count`th.
    pub fn wait_for_lines(
        &self,
        needles: &[&str],
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let mut found = None;
        wait_until(
            &format!(
                "{count} log line(s) with {needles:?} in {}",
                self.log.display()
            ),
            timeout,
            || {
                found = self
                    .output()
                    .lines()
                    .filter(|l| needles.iter().all(|n| l.contains(n)))
                    .nth(count.saturating_sub(1))
                    .map(str::to_string);
                Ok(found.is_some())
            },
        )
        .with_context(|| format!("log so far:\n{}", self.output()))?;
        Ok(found.unwrap_or_default())
    }
}

/// A set of namespaces on one bridge, torn down on drop.
pub struct Lab {
    prefix: String,
    switch: String,
    hosts: Vec<Host>,
    procs: Vec<Proc>,
    dir: PathBuf,
}

impl Lab {
    /// Creates the switch namespace with its bridge; `tag` is a short word for the names.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        // The pid after the tag tells a dead lab from a live one (remove_stale_labs).
        anyhow::ensure!(
            !tag.is_empty() && tag.chars().all(|c| c.is_ascii_lowercase()),
            "lab tag {tag:?}: lower-case letters only"
        );
        remove_stale_labs();
        let prefix = format!(
            "{tag}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("vipd-lab-{prefix}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let switch = format!("{prefix}-sw");
        let lab = Self {
            prefix,
            switch: switch.clone(),
            hosts: Vec::new(),
            procs: Vec::new(),
            dir,
        };
        run("ip", &["netns", "add", &switch])?;
        lab.ip(&switch, &["link", "add", "br0", "type", "bridge"])?;
        lab.ip(&switch, &["link", "set", "br0", "up"])?;
        // A switch forwards frames as they are: with bridge netfilter on (the default where
        // it is built in) IP frames are trimmed to their IP length on the way through,
        // which would hide Ethernet padding from the receivers.
        run(
            "ip",
            &[
                "netns",
                "exec",
                &switch,
                "sysctl",
                "-qew",
                "net.bridge.bridge-nf-call-iptables=0",
                "net.bridge.bridge-nf-call-ip6tables=0",
                "net.bridge.bridge-nf-call-arptables=0",
            ],
        )?;
        Ok(lab)
    }

    /// The unique prefix of this lab's names (also good for vipd instance names).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A directory for this lab's logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lab's heartbeat key file (made on first use, mode 0600): pools need one, and
    /// every node the lab starts shares it.
    pub fn key_file(&self) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.dir.join("lab.key");
        if !path.exists() {
            let mut bytes = [0u8; 16];
            File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
                .context("reading /dev/urandom")?;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{hex}\n").as_bytes()))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(path)
    }

    /// Adds a host named `name` with `addr_cidr` (e.g. "192.0.2.11/24") and `mac` on eth0.
    pub fn add_host(&mut self, name: &str, addr_cidr: &str, mac: &str) -> anyhow::Result<Host> {
        let netns = format!("{}-{name}", self.prefix);
        run("ip", &["netns", "add", &netns])?;
        let host = Host {
            name: name.into(),
            netns: netns.clone(),
            addr: addr_cidr.split('/').next().unwrap_or(addr_cidr).into(),
            mac: mac.into(),
        };
        self.hosts.push(host.clone());
        let port = format!("p-{name}");
        run(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "netns",
                &netns,
                "address",
                mac,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &self.switch,
            ],
        )?;
        self.ip(&self.switch, &["link", "set", &port, "master", "br0"])?;
        self.ip(&self.switch, &["link", "set", &port, "up"])?;
        // No duplicate address detection: IPv6 (link-local too) is usable at once.
        self.sysctl(&host, "net.ipv6.conf.eth0.accept_dad", "0")?;
        // Keep IPv6 addresses across link down/up, as a real host's configuration would.
        self.sysctl(&host, "net.ipv6.conf.eth0.keep_addr_on_down", "1")?;
        self.ip(&netns, &["link", "set", "lo", "up"])?;
        self.ip(&netns, &["addr", "add", addr_cidr, "dev", "eth0"])?;
        self.ip(&netns, &["link", "set", "eth0", "up"])?;
        Ok(host)
    }

    /// Adds the nodes `n1` … `nN` on the bridge: node `i` at 192.0.2.(10 + i)/24 with the
    /// MAC 02:00:00:00:00:(10 + i), the layout every namespace test uses.
    pub fn add_nodes<const N: usize>(&mut self) -> anyhow::Result<[Host; N]> {
        let mut hosts = Vec::with_capacity(N);
        for i in 1..=N {
            let n = 10 + i;
            hosts.push(self.add_host(
                &format!("n{i}"),
                &format!("192.0.2.{n}/24"),
                &format!("02:00:00:00:00:{n:02x}"),
            )?);
        }
        Ok(hosts.try_into().unwrap_or_else(|_| unreachable!("N hosts")))
    }

    /// Joins `a` and `b` by a cable of their own (a veth pair, both ends named `ifname`,
    /// with the MAC `<host's eth0 MAC with the last byte + 0x80>`) besides the switch:
    /// a second segment, with `a_cidr` and `b_cidr` on its ends.
    pub fn connect(
        &self,
        a: &Host,
        b: &Host,
        ifname: &str,
        a_cidr: &str,
        b_cidr: &str,
    ) -> anyhow::Result<()> {
        let second_mac = |h: &Host| -> anyhow::Result<String> {
            let (head, last) = h.mac.rsplit_once(':').context("a MAC with colons")?;
            let last = u8::from_str_radix(last, 16).context("a hex MAC")?;
            Ok(format!("{head}:{:02x}", last ^ 0x80))
        };
        let (a_mac, b_mac) = (second_mac(a)?, second_mac(b)?);
        run(
            "ip",
            &[
                "link", "add", ifname, "netns", &a.netns, "address", &a_mac, "type", "veth",
                "peer", "name", ifname, "netns", &b.netns, "address", &b_mac,
            ],
        )?;
        for (h, cidr) in [(a, a_cidr), (b, b_cidr)] {
            self.sysctl(h, &format!("net.ipv6.conf.{ifname}.accept_dad"), "0")?;
            self.ip(&h.netns, &["addr", "add", cidr, "dev", ifname])?;
            self.ip(&h.netns, &["link", "set", ifname, "up"])?;
        }
        Ok(())
    }

    /// Adds another address to `host`'s eth0 (IPv6 without duplicate address detection).
    pub fn add_address(&self, host: &Host, addr_cidr: &str) -> anyhow::Result<()> {
        let mut args = vec!["addr", "add", addr_cidr, "dev", "eth0"];
        if addr_cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(&host.netns, &args)?;
        Ok(())
    }

    /// Sets a sysctl inside `host`.
    pub fn sysctl(&self, host: &Host, key: &str, value: &str) -> anyhow::Result<()> {
        let out = self.exec(host, "sysctl", &["-qw", &format!("{key}={value}")])?;
        if !out.status.success() {
            bail!(
                "sysctl {key}={value} in {}: {}",
                host.netns,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Sets the switch-side port of `host` up or down: the host's eth0 loses carrier.
    pub fn set_switch_port(&self, host: &Host, up: bool) -> anyhow::Result<()> {
        let port = format!("p-{}", host.name);
        self.ip(
            &self.switch,
            &["link", "set", &port, if up { "up" } else { "down" }],
        )?;
        Ok(())
    }

    /// Cuts (or, with `cut` false, heals every cut between) the switch ports of `a` and
    /// `b`: frames between them are dropped in the switch (nftables, bridge family), both
    /// ways, unicast and multicast; both still reach every other host, and neither loses
    /// carrier.
    pub fn partition(&self, a: &Host, b: &Host, cut: bool) -> anyhow::Result<()> {
        let paths: &[(&Host, &Host)] = if cut { &[(a, b), (b, a)] } else { &[] };
        self.drop_in_switch("lab_partition", paths)
    }

    /// Cuts (or, with `cut` false, heals) the switch path from `from` to `to` only: frames
    /// `from` sends to `to` are dropped in the switch (unicast and multicast), the other
    /// way still flows (a one-way fault, as a bad transceiver or a filter makes). Its own
    /// table, apart from [`partition`](Self::partition)'s.
    pub fn cut_one_way(&self, from: &Host, to: &Host, cut: bool) -> anyhow::Result<()> {
        let paths: &[(&Host, &Host)] = if cut { &[(from, to)] } else { &[] };
        self.drop_in_switch("lab_one_way", paths)
    }

    /// Makes the switch's nftables table `table` drop the frames of each (from, to) path
    /// of `paths`, or removes the table when there are none.
    fn drop_in_switch(&self, table: &str, paths: &[(&Host, &Host)]) -> anyhow::Result<()> {
        let script = if paths.is_empty() {
            format!("table bridge {table} {{}}\ndelete table bridge {table}\n")
        } else {
            let rules: String = paths
                .iter()
                .map(|(from, to)| {
                    format!(
                        "  iifname \"p-{}\" oifname \"p-{}\" drop\n",
                        from.name, to.name
                    )
                })
                .collect();
            format!(
                "table bridge {table} {{\n chain forward {{\n  type filter hook forward priority 0;\n{rules} }}\n}}\n"
            )
        };
        self.switch_nft(&script)
    }

    /// Runs an nft script in the switch's namespace.
    fn switch_nft(&self, script: &str) -> anyhow::Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.switch, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft in the switch")?;
        std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, script.as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Runs `ip -n <netns> args…` and returns its stdout.
    pub fn ip(&self, netns: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", netns];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a command inside `host` (`ip netns exec`) and returns its output, whatever
    /// its exit status.
    pub fn exec(&self, host: &Host, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &host.netns, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("ip netns exec {} {program} {args:?}", host.netns))
    }

    /// Whether one ping from `from` to `addr` gets an answer within a second.
    pub fn ping(&self, from: &Host, addr: &str) -> anyhow::Result<bool> {
        let flag = if addr.contains(':') { "-6" } else { "-4" };
        Ok(self
            .exec(from, "ping", &[flag, "-c1", "-W1", "-n", "-q", addr])?
            .status
            .success())
    }

    /// Sets `host`'s eth0 up or down.
    pub fn set_link(&self, host: &Host, up: bool) -> anyhow::Result<()> {
        self.set_link_of(host, "eth0", up)
    }

    /// Sets `host`'s interface `ifname` up or down.
    pub fn set_link_of(&self, host: &Host, ifname: &str, up: bool) -> anyhow::Result<()> {
        self.ip(
            &host.netns,
            &["link", "set", ifname, if up { "up" } else { "down" }],
        )?;
        Ok(())
    }

    /// The addresses on `host`'s eth0, as "addr/len".
    pub fn addresses(&self, host: &Host) -> anyhow::Result<Vec<String>> {
        self.addresses_on(host, "eth0")
    }

    /// The addresses on `host`'s interface `ifname`, as "addr/len".
    pub fn addresses_on(&self, host: &Host, ifname: &str) -> anyhow::Result<Vec<String>> {
        let out = self.ip(&host.netns, &["-o", "addr", "show", "dev", ifname])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut words = l
                    .split_whitespace()
                    .skip_while(|w| *w != "inet" && *w != "inet6");
                words.next()?;
                words.next().map(str::to_string)
            })
            .collect())
    }

    /// Whether `host` has `addr` (without prefix) on eth0.
    pub fn has_address(&self, host: &Host, addr: &str) -> anyhow::Result<bool> {
        Ok(self
            .addresses(host)?
            .iter()
            .any(|a| a.split('/').next() == Some(addr)))
    }

    /// The MAC in `host`'s neighbour entry for `addr`, if any.
    pub fn neighbour_mac(&self, host: &Host, addr: &str) -> anyhow::Result<Option<String>> {
        let out = self.ip(&host.netns, &["neigh", "show", addr, "dev", "eth0"])?;
        Ok(out
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(str::to_string))
    }

    /// Starts `program args…` inside `host` with nsenter (which keeps the host's /sys, so
    /// bpffs stays visible), output to `<lab dir>/<log_name>.log`.
    pub fn spawn(
        &mut self,
        host: &Host,
        log_name: &str,
        program: &Path,
        args: &[&str],
    ) -> anyhow::Result<usize> {
        self.spawn_with_env(host, log_name, program, args, &[])
    }

    /// [`Self::spawn`] with `env` added to the program's environment.
    pub fn spawn_with_env(
        &mut self,
        host: &Host,
        log_name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<usize> {
        let log = self.dir.join(format!("{log_name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        use std::os::unix::process::CommandExt as _;
        let child = Command::new("nsenter")
            .process_group(0)
            .arg(format!("--net=/run/netns/{}", host.netns))
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("nsenter --net {} {}", host.netns, program.display()))?;
        self.procs.push(Proc { child, log });
        Ok(self.procs.len() - 1)
    }

    /// Starts `vipd run` in `host` as node `id` on its eth0, with `extra` flags. The
    /// instance is named `<lab prefix>-<host>`, so the lab removes its pins when dropped.
    /// A pool gets the lab's key ([`Self::key_file`]) unless `extra` names a key file or
    /// `--insecure`.
    pub fn spawn_vipd(
        &mut self,
        host: &Host,
        id: u32,
        log_name: &str,
        vipd: &Path,
        extra: &[&str],
    ) -> anyhow::Result<usize> {
        self.spawn_vipd_with_env(host, id, log_name, vipd, extra, &[])
    }

    /// [`Self::spawn_vipd`] with `env` added to vipd's environment (e.g. a debug build's
    /// `VIPD_FAULT_*` fault injection).
    pub fn spawn_vipd_with_env(
        &mut self,
        host: &Host,
        id: u32,
        log_name: &str,
        vipd: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<usize> {
        let id = id.to_string();
        let instance = format!("{}-{}", self.prefix, host.name);
        let key = self.key_file()?;
        let key = key.to_str().context("non-UTF-8 path")?.to_owned();
        let mut args = vec!["run", "-i", "eth0", "-n", &id, "--instance", &instance];
        let says = |flag: &str| extra.contains(&flag);
        let vrrp_only = says("--vrrp") && !says("--vip");
        if !says("--auth-key-file") && !says("--insecure") && !vrrp_only {
            args.extend(["--auth-key-file", &key]);
        }
        args.extend_from_slice(extra);
        self.spawn_with_env(host, log_name, vipd, &args, env)
    }

    /// Starts keepalived (VRRP only, in the foreground, logging to the console) in `host`
    /// with the configuration text `conf`; its files go to `<lab dir>/<log_name>/`, its
    /// output to `<lab dir>/<log_name>.log`. Signals reach its VRRP child too (one process
    /// group), so SIGKILL is a hard failure of the whole daemon.
    pub fn spawn_keepalived(
        &mut self,
        host: &Host,
        log_name: &str,
        conf: &str,
    ) -> anyhow::Result<usize> {
        let dir = self.dir.join(log_name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("keepalived.conf");
        std::fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
        let (pid, vrrp) = (dir.join("keepalived.pid"), dir.join("vrrp.pid"));
        let text = |p: &Path| p.to_str().context("non-UTF-8 path").map(str::to_owned);
        let (path, pid, vrrp) = (text(&path)?, text(&pid)?, text(&vrrp)?);
        let args = ["-n", "-l", "-P", "-f", &path, "-p", &pid, "-r", &vrrp];
        self.spawn(host, log_name, Path::new("keepalived"), &args)
    }

    /// Starts FRRouting's zebra and vrrpd in `host`, as FRR's `frr` user (its daemons
    /// refuse root unless it is in the `frrvty` group), with `vrrpd_conf` (interface and
    /// `vrrp` lines); their sockets, pid files and configuration go to `<lab dir>/<name>/`,
    /// their output to `<lab dir>/<name>-zebra.log` and `<name>-vrrpd.log`. vrrpd needs
    /// the group's macvlan (`vrrp4-2-<vrid>`, the virtual MAC, mode bridge, the VIPs on
    /// it), made by the caller. Returns the two processes.
    pub fn spawn_frr(
        &mut self,
        host: &Host,
        name: &str,
        vrrpd_conf: &str,
    ) -> anyhow::Result<(usize, usize)> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = self.frr_dir(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
        let text = |p: PathBuf| p.to_str().context("non-UTF-8 path").map(str::to_owned);
        let mut procs = [0; 2];
        for (i, (daemon, conf)) in [
            ("zebra", format!("hostname {}\n", host.name)),
            ("vrrpd", vrrpd_conf.to_string()),
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.join(format!("{daemon}.conf"));
            std::fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
            let (conf, pid) = (text(path)?, text(dir.join(format!("{daemon}.pid")))?);
            let (zserv, vty) = (text(dir.join("zserv.api"))?, text(dir.clone())?);
            let args = [
                "-u",
                "frr",
                "-g",
                "frr",
                "-f",
                &conf,
                "-i",
                &pid,
                "-z",
                &zserv,
                "--vty_socket",
                &vty,
                "--log",
                "stdout",
            ];
            let program = PathBuf::from(format!("/usr/lib/frr/{daemon}"));
            procs[i] = self.spawn(host, &format!("{name}-{daemon}"), &program, &args)?;
        }
        Ok((procs[0], procs[1]))
    }

    /// `show vrrp json` of the FRR started as `name` in `host`: one object per VRID.
    pub fn frr_vrrp(&self, host: &Host, name: &str) -> anyhow::Result<serde_json::Value> {
        let dir = self.frr_dir(name);
        let dir = dir.to_str().context("non-UTF-8 path")?;
        let out = self.exec(
            host,
            "vtysh",
            &["--vty_socket", dir, "-c", "show vrrp json"],
        )?;
        anyhow::ensure!(
            out.status.success(),
            "vtysh: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).context("vtysh's show vrrp json")
    }

    fn frr_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts tcpdump on `host`'s eth0, writing the frames that match `filter` (a pcap
    /// filter such as `"ip proto 112"`) to `<lab dir>/<name>.pcap` packet by packet (read it
    /// with [`crate::pcap::Capture::read`] while it runs). It stops after `max_packets`
    /// or `timeout`, whichever comes first; returns once it listens, with its process id
    /// and the capture's path.
    pub fn spawn_capture(
        &mut self,
        host: &Host,
        name: &str,
        filter: &str,
        max_packets: u32,
        timeout: Duration,
    ) -> anyhow::Result<(usize, PathBuf)> {
        let pcap = self.dir.join(format!("{name}.pcap"));
        let secs = timeout.as_secs().max(1).to_string();
        let count = max_packets.to_string();
        let path = pcap.to_str().context("non-UTF-8 path")?.to_owned();
        let args = [
            "--signal=TERM",
            &secs,
            "tcpdump",
            "-i",
            "eth0",
            "-n",
            "-U",
            "-Z",
            "root",
            "-c",
            &count,
            "-w",
            &path,
            filter,
        ];
        let p = self.spawn(host, name, Path::new("timeout"), &args)?;
        self.procs[p].wait_for_line(&["listening on"], Duration::from_secs(10))?;
        Ok((p, pcap))
    }

    /// Sends each of `frames` (complete Ethernet frames, header included) as it is out of
    /// `host`'s `ifname`, with a raw packet socket: no checksum or length is fixed up.
    pub fn send_frames(&self, host: &Host, ifname: &str, frames: &[Vec<u8>]) -> anyhow::Result<()> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
        let name = std::ffi::CString::new(ifname)?;
        self.in_netns(host, || {
            // SAFETY: a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if index == 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("{ifname} in {}", host.netns));
            }
            // Protocol 0: this socket only sends, it receives nothing.
            // SAFETY: plain socket(2).
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
            }
            // SAFETY: a descriptor we just opened and nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            for (i, frame) in frames.iter().enumerate() {
                if frame.len() < 14 {
                    bail!(
                        "frame {i}: {} bytes, shorter than an Ethernet header",
                        frame.len()
                    );
                }
                // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
                let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
                addr.sll_ifindex = index as i32;
                addr.sll_halen = 6;
                addr.sll_addr[..6].copy_from_slice(&frame[..6]);
                // SAFETY: the buffer and the address are valid for the lengths given.
                let sent = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        std::ptr::from_ref(&addr).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                if sent < 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("sending frame {i} on {ifname}"));
                }
                if sent as usize != frame.len() {
                    bail!("frame {i}: sent {sent} of {} bytes", frame.len());
                }
            }
            Ok(())
        })
    }

    /// A process started with [`Lab::spawn`].
    pub fn proc(&mut self, id: usize) -> &mut Proc {
        &mut self.procs[id]
    }

    /// Runs `f` on a thread that has entered `host`'s network namespace.
    pub fn in_netns<T: Send>(
        &self,
        host: &Host,
        f: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let path = format!("/run/netns/{}", host.netns);
        let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
        thread::scope(|s| {
            s.spawn(|| {
                use std::os::fd::AsRawFd as _;
                // SAFETY: setns on this thread only, with a namespace fd we hold open.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("setns({path})"));
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| bail!("thread in {path} panicked"))
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.signal(libc::SIGKILL);
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", &h.netns]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch])
            .status();
        // Pins of vipd instances named after this lab, left by the processes killed above.
        remove_pins(&self.prefix);
    }
}

/// Removes `<PIN_ROOT>/<prefix>-*`, the control sockets `/run/vipd/<prefix>-*.sock` (a
/// SIGKILLed daemon leaves both) and the state files `/var/lib/vipd/<prefix>-*` of vipd
/// instances named after a lab.
fn remove_pins(prefix: &str) {
    for (dir, suffix) in [
        ("/run/vipd", ".sock"),
        ("/var/lib/vipd", ".incarnation"),
        ("/var/lib/vipd", ".sysctl"),
        ("/var/lib/vipd", ".drained"),
    ] {
        let Ok(dir) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{prefix}-")) && name.ends_with(suffix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(PIN_ROOT) {
        for entry in dir.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-"))
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Runs a command; its stdout on success, an error with its stderr otherwise.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` every 10 ms until it returns true; fails after `timeout`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        check_interrupted()?;
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that this test runs as root, as the namespace lab and XDP need. The tests that
/// call it are `#[ignore]`d with that reason, so a plain `cargo test` lists them as
/// ignored; `cargo test -- --include-ignored` (README's test command, and CI) runs them,
/// and as another user fails them here, saying why, instead of passing without running.
pub fn require_root() {
    // SAFETY: geteuid never fails.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test needs root (network namespaces, XDP, bpffs): run `cargo test -- \
         --include-ignored` as root, or plain `cargo test` to list it as ignored"
    );
}

/// Whether SIGINT or SIGTERM arrived since [`handle_interrupts`], for loops of a caller's
/// own that must stop like the lab's waits do.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}
