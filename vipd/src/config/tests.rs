use std::{net::IpAddr, path::PathBuf};

use vipd_common::heartbeat::DEFAULT_GROUP_V4;

use super::{pool::DEFAULT_MAX_WEIGHT, *};

const EXAMPLE: &str = include_str!("../../../dist/vipd.toml");

/// A key file (mode 0600) named `tag` in a temporary directory.
fn key_file(tag: &str, hex: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("vipd-config-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("auth.key");
    std::fs::write(&path, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The example configuration, its key file in a temporary directory.
fn example(tag: &str) -> Config {
    let key = key_file(tag, "00112233445566778899aabbccddeeff");
    let text = EXAMPLE.replace("/etc/vipd/auth.key", key.to_str().unwrap());
    Config::from_file(File::parse(&text).unwrap()).unwrap()
}

#[test]
fn the_example_config_is_valid() {
    let c = example("valid");
    assert!(c.pool.auth_key.is_some());
    assert_eq!(c.node.id, 1);
    assert_eq!(c.pool.vips.len(), 3);
    assert_eq!(c.common.checks.len(), 1);
}

#[test]
fn effective_config_round_trips() {
    let c = example("round-trip");
    let again = Config::from_file(File::parse(&c.to_toml()).unwrap()).unwrap();
    assert_eq!(c, again);
}

#[test]
fn unknown_keys_name_their_path() {
    let e = File::parse("[heartbeat]\nintervall = \"1s\"\n").unwrap_err();
    assert!(e.contains("heartbeat.intervall"), "{e}");
    let e = File::parse("[pool]\nvips = [\"192.0.2.1\", \"nonsense\"]\n").unwrap_err();
    assert!(e.contains("pool.vips"), "{e}");
    let e = File::parse("[[check]]\nname = \"x\"\ntype = \"ftp\"\n").unwrap_err();
    assert!(e.contains("check[0].type"), "{e}");
    let e = File::parse("[[check]]\nname = \"x\"\ntype = \"tcp\"\nadress = \"x\"\n").unwrap_err();
    assert!(e.contains("adress"), "{e}");
    assert!(e.contains("check"), "{e}");
    let e = File::parse("[nodes]\n").unwrap_err();
    assert!(e.contains("nodes"), "{e}");
}

#[test]
fn missing_and_bad_values_are_explained() {
    let base = "[node]\nid = 1\ninterface = \"eth0\"\n";
    let cfg = |extra: &str| Config::from_file(File::parse(&format!("{base}{extra}")).unwrap());
    assert!(cfg("").unwrap_err().contains("no VIPs"));
    assert!(
        cfg("[pool]\nvips=[\"192.0.2.1\",\"192.0.2.1\"]")
            .unwrap_err()
            .contains("twice")
    );
    assert!(
        cfg("[pool]\nvips=[\"192.0.2.1\"]\n[heartbeat]\nauth=\"off\"\ninterval=\"1s\"\ndead_interval=\"1s\"")
            .unwrap_err()
            .contains("longer")
    );
    assert!(
        cfg("[pool]\nvips=[\"192.0.2.1\"]\npreferred={\"192.0.2.2\"=1}")
            .unwrap_err()
            .contains("not in pool.vips")
    );
    let pref =
        cfg("[pool]\nvips=[\"192.0.2.1\"]\npreferred={\"192.0.2.1\"=2}\n[heartbeat]\nauth=\"off\"")
            .unwrap();
    assert_eq!(pref.pool.preferred.len(), 1);
    assert!(
        cfg("[pool]\nvips=[\"192.0.2.1\"]\n[announce]\nrefresh=\"1000years\"")
            .unwrap_err()
            .contains("at most")
    );
    // A pool needs a key, or to say it runs without one.
    let e = cfg("[pool]\nvips=[\"192.0.2.1\"]").unwrap_err();
    assert!(
        e.contains("vipd keygen") && e.contains("auth = \"off\"") && e.contains("--insecure"),
        "{e}"
    );
    assert!(
        cfg("[pool]\nvips=[\"192.0.2.1\"]\n[heartbeat]\nauth=\"off\"\nauth_key_file=\"/k\"")
            .unwrap_err()
            .contains("remove one")
    );
    assert!(
        cfg("[pool]\nvips=[\"192.0.2.1\"]\n[heartbeat]\nauth=\"off\"\nauth_next_key_file=\"/k\"")
            .unwrap_err()
            .contains("needs an auth_key_file")
    );
    let e = File::parse("[heartbeat]\nauth=\"maybe\"").unwrap_err();
    assert!(e.contains("expected `key` or `off`"), "{e}");
    let heavy = "[node]\nid = 1\ninterface = \"eth0\"\nweight = 11\n[heartbeat]\nauth = \"off\"\n\
                 [pool]\nvips = [\"192.0.2.1\"]\nmax_weight = 10\n";
    let e = Config::from_file(File::parse(heavy).unwrap()).unwrap_err();
    assert!(e.contains("max_weight"), "{e}");
    let ok = cfg("[pool]\nvips=[\"192.0.2.1\"]\n[heartbeat]\nauth=\"off\"").unwrap();
    assert_eq!(ok.pool.auth_key, None);
    assert_eq!(ok.pool.max_weight, DEFAULT_MAX_WEIGHT);
    assert_eq!(ok.pool.destinations(), vec![IpAddr::from(DEFAULT_GROUP_V4)]);
    assert_eq!(ok.node.pin_dir(), PathBuf::from("/sys/fs/bpf/vipd/eth0-1"));
}

#[test]
fn the_auth_key_file_is_read_checked_and_never_shown() {
    use std::os::unix::fs::PermissionsExt as _;
    let hex = "00112233445566778899aabbccddeeff";
    let key_path = key_file("auth", hex);
    let dir = key_path.parent().unwrap().to_path_buf();
    let text = format!(
        "[node]\nid = 1\ninterface = \"eth0\"\n[pool]\nvips = [\"192.0.2.1\"]\n\
         [heartbeat]\nauth_key_file = \"{}\"\n",
        key_path.display()
    );
    let c = Config::from_file(File::parse(&text).unwrap()).unwrap();
    assert_eq!(c.pool.auth_key, Some(crate::auth::parse_key(hex).unwrap()));
    // The effective configuration names the file, never the key, and round-trips.
    let toml = c.to_toml();
    assert!(toml.contains(&format!("auth_key_file = \"{}\"", key_path.display())));
    assert!(
        !toml.contains(hex) && !format!("{c:?}").contains(hex),
        "{toml}"
    );
    assert_eq!(Config::from_file(File::parse(&toml).unwrap()).unwrap(), c);

    // Too open: refused, naming the file.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Config::from_file(File::parse(&text).unwrap()).unwrap_err();
    assert!(
        e.contains(&key_path.display().to_string()) && e.contains("0644"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn reload_rules() {
    let c = example("reload");
    let mut vips_changed = c.clone();
    vips_changed.pool.vips.pop();
    assert_eq!(c.needs_restart(&vips_changed), None);
    let mut other_if = c.clone();
    other_if.node.interface = "eth9".into();
    assert_eq!(c.needs_restart(&other_if), Some("the interface"));
    // Turning authentication on or off needs a restart.
    let key = |b: u8| Some(crate::auth::Key::from_bytes([b; 16]));
    let mut off = c.clone();
    off.pool.auth_key_file = None;
    off.pool.auth_key = None;
    let on_off = Some("heartbeat authentication on or off");
    assert_eq!(c.needs_restart(&off), on_off);
    assert_eq!(off.needs_restart(&c), on_off);
    // A key rotation by reloads: only ever to a key the running node accepts.
    let old = c.clone();
    let mut new_key = old.clone();
    new_key.pool.auth_key = key(2);
    assert!(
        old.needs_restart(&new_key)
            .is_some_and(|w| w.contains("auth_next_key_file")),
        "signing with a key not accepted yet would split the pool"
    );
    let mut step1 = old.clone();
    step1.pool.auth_next_key = key(2);
    assert_eq!(old.needs_restart(&step1), None);
    let mut step2 = step1.clone();
    (step2.pool.auth_key, step2.pool.auth_next_key) =
        (step1.pool.auth_next_key, step1.pool.auth_key);
    assert_eq!(step1.needs_restart(&step2), None);
    let mut step3 = step2.clone();
    step3.pool.auth_next_key = None;
    assert_eq!(step2.needs_restart(&step3), None);
    assert_eq!(old.needs_restart(&old.clone()), None);
    // Unicast peers change by reloads, within the families heartbeats already use.
    let mut more_peers = c.clone();
    more_peers.pool.peers.push("192.0.2.14".parse().unwrap());
    assert_eq!(c.needs_restart(&more_peers), None);
    let mut v6_peer = c.clone();
    v6_peer.pool.peers.push("2001:db8::14".parse().unwrap());
    assert!(
        c.needs_restart(&v6_peer)
            .is_some_and(|w| w.contains("families"))
    );
    let mut multicast = c.clone();
    multicast.pool.peers.clear();
    assert!(
        c.needs_restart(&multicast)
            .is_some_and(|w| w.contains("multicast"))
    );
}

const VRRP: &str = r#"
[node]
id = 1
interface = "eth0"

[[vrrp]]
vrid = 51
priority = 150
vips = ["192.0.2.200/24"]
advert_interval = "100ms"
preempt = false

[[vrrp]]
vrid = 51
vips = ["2001:db8::200/64"]
"#;

#[test]
fn vrrp_groups_parse_default_and_round_trip() {
    let c = Config::from_file(File::parse(VRRP).unwrap()).unwrap();
    assert!(c.pool.vips.is_empty());
    assert_eq!(c.vrrp.len(), 2);
    let (v4, v6) = (&c.vrrp[0], &c.vrrp[1]);
    assert_eq!(
        (v4.priority, v4.interval_cs(), v4.preempt),
        (150, 10, false)
    );
    assert_eq!(
        (v6.priority, v6.interval_cs(), v6.preempt),
        (100, 100, true)
    );
    assert!(v6.ipv6() && !v4.ipv6() && v6.accept);
    let again = Config::from_file(File::parse(&c.to_toml()).unwrap()).unwrap();
    assert_eq!(again, c);
}

#[test]
fn a_vrrpv2_group_carries_its_password() {
    let g = Vrrp::parse_spec("51,vip=192.0.2.200,interval=3s,version=2,auth_pass=secret").unwrap();
    assert_eq!(g.version, 2);
    assert_eq!(g.auth(), (vipd_common::vrrp::AUTH_PASS, *b"secret\0\0"));
    let text = "[node]\nid = 1\ninterface = \"eth0\"\n[[vrrp]]\nvrid = 51\nversion = 2\n\
                vips = [\"192.0.2.200\"]\nadvert_interval = \"3s\"\n";
    let c = Config::from_file(File::parse(text).unwrap()).unwrap();
    assert_eq!((c.vrrp[0].version, c.vrrp[0].interval_cs()), (2, 300));
    assert_eq!(c.vrrp[0].auth(), (vipd_common::vrrp::AUTH_NONE, [0; 8]));
    let v3 = Config::from_file(File::parse(VRRP).unwrap()).unwrap();
    assert!(v3.vrrp.iter().all(|g| g.version == 3), "3 by default");
}

#[test]
fn a_unicast_group_lists_its_peers_in_either_form() {
    let g = Vrrp::parse_spec(
        "51,vip=192.0.2.200/24,unicast_peer=192.0.2.13,unicast_peer=192.0.2.11,\
         unicast_src=192.0.2.12,unicast_min_ttl=255",
    )
    .unwrap();
    let text = "[node]\nid = 1\ninterface = \"eth0\"\n[[vrrp]]\nvrid = 51\n\
                vips = [\"192.0.2.200/24\"]\nunicast_peers = [\"192.0.2.11\", \"192.0.2.13\"]\n\
                unicast_src = \"192.0.2.12\"\nunicast_min_ttl = 255\n";
    let c = Config::from_file(File::parse(text).unwrap()).unwrap();
    let mut g = g;
    g.validate().unwrap();
    g.interface = c.vrrp[0].interface.clone();
    assert_eq!(g, c.vrrp[0]);
    assert!(g.unicast());
    let again = Config::from_file(File::parse(&c.to_toml()).unwrap()).unwrap();
    assert_eq!(again, c);
    assert!(Vrrp::parse_spec("51,unicast_peer=nowhere").is_err());
}

/// Every key the file accepts, as serde's derives declare them: `section.key` for the
/// sections, `vrrp.key` and `check.key` for the `[[vrrp]]` and `[[check]]` tables.
fn file_keys() -> Vec<String> {
    use serde::{
        Deserialize as _,
        de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor},
    };
    use std::cell::RefCell;

    type Error = de::value::Error;
    /// Deserializes nothing: records each struct's field names under `prefix`, visits
    /// a section's fields one level down, gives structs an empty map (their defaults)
    /// and tables one element (recorded even though it fails).
    struct Keys<'a> {
        prefix: String,
        depth: usize,
        out: &'a RefCell<Vec<String>>,
    }
    impl<'de> Deserializer<'de> for Keys<'_> {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(de::Error::custom("a leaf"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            let mut out = self.out.borrow_mut();
            out.extend(fields.iter().map(|f| format!("{}{f}", self.prefix)));
            drop(out);
            let fields = if self.depth == 0 { fields } else { &[] };
            visitor.visit_map(Fields {
                fields: fields.iter(),
                out: self.out,
                current: String::new(),
            })
        }
        fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_seq(One { keys: Some(self) })
        }
        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_some(self)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string bytes byte_buf
            unit unit_struct newtype_struct tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    struct Fields<'a> {
        fields: std::slice::Iter<'static, &'static str>,
        out: &'a RefCell<Vec<String>>,
        current: String,
    }
    impl<'de> MapAccess<'de> for Fields<'_> {
        type Error = Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            let Some(f) = self.fields.next() else {
                return Ok(None);
            };
            self.current = (*f).to_string();
            seed.deserialize(de::value::StrDeserializer::<Error>::new(f))
                .map(Some)
        }
        fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
            seed.deserialize(Keys {
                prefix: format!("{}.", self.current),
                depth: 1,
                out: self.out,
            })
        }
    }
    struct One<'a> {
        keys: Option<Keys<'a>>,
    }
    impl<'de> SeqAccess<'de> for One<'_> {
        type Error = Error;
        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, Error> {
            // The element fails (required fields missing) once its keys are recorded.
            Ok(self.keys.take().and_then(|k| seed.deserialize(k).ok()))
        }
    }
    let out = RefCell::new(Vec::new());
    let _ = File::deserialize(Keys {
        prefix: String::new(),
        depth: 0,
        out: &out,
    });
    out.into_inner()
}

/// The configuration reference (docs/configuration.md, and docs/vrrp.md for the VRRP
/// groups' keys) names every key the code accepts, so the two cannot drift apart.
#[test]
fn the_configuration_reference_names_every_key() {
    let reference = include_str!("../../../docs/configuration.md");
    let vrrp = include_str!("../../../docs/vrrp.md");
    let keys = file_keys();
    assert!(keys.len() > 40, "{keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| match k.split_once('.') {
            // A section itself: its keys are checked one by one.
            None => false,
            Some(("vrrp", key)) => !vrrp.contains(&format!("{key} =")),
            Some(("check", key)) => !reference.contains(&format!("`{key}`")),
            Some(_) => !reference.contains(&format!("`{k}`")),
        })
        .collect();
    assert!(
        missing.is_empty(),
        "keys the code accepts but the reference does not name: {missing:?}"
    );
}

#[test]
fn macvlan_names_name_the_interface_and_fit_linux() {
    let g = Vrrp::parse_spec("51,vip=192.0.2.200").unwrap();
    let g6 = Vrrp::parse_spec("255,vip=2001:db8::1").unwrap();
    assert_eq!(g.vmac_name(2), "vrrp4.51.2");
    assert_ne!(g.vmac_name(2), g.vmac_name(3), "one VRID on two interfaces");
    assert_eq!(g6.vmac_name(99_999), "vrrp6.255.99999");
    assert_eq!(g6.vmac_name(u32::MAX), "v6.255.ffffffff");
    assert!(g6.vmac_name(100_000).len() <= 15);
}

#[test]
fn the_vrrp_example_config_is_valid() {
    let text = include_str!("../../../dist/vipd-vrrp.toml");
    let c = Config::from_file(File::parse(text).unwrap()).unwrap();
    assert_eq!(c.vrrp.len(), 2);
    assert!(c.vrrp[1].ipv6());
}

#[test]
fn vrrp_spec_matches_the_file_form() {
    let g = Vrrp::parse_spec(
        "51,priority=150,vip=192.0.2.200/24,interval=100ms,preempt=no,interface=eth0",
    )
    .unwrap();
    let c = Config::from_file(File::parse(VRRP).unwrap()).unwrap();
    assert_eq!(g, c.vrrp[0]);
    for bad in [
        "",
        "x",
        "300",
        "51,prio=300",
        "51,vip",
        "51,colour=red",
        "51,preempt=maybe",
    ] {
        assert!(Vrrp::parse_spec(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn bad_vrrp_groups_are_refused_with_the_reason() {
    let bad = |group: &str, needle: &str| {
        let text = format!("[node]\nid = 1\ninterface = \"eth0\"\n[[vrrp]]\n{group}\n");
        let err = File::parse(&text)
            .and_then(Config::from_file)
            .expect_err(group);
        assert!(err.contains(needle), "{group}: {err}");
    };
    bad("vrid = 0\nvips = [\"192.0.2.1\"]", "VRID");
    bad("vrid = 256\nvips = [\"192.0.2.1\"]", "vrrp");
    bad("vrid = 1\npriority = 0\nvips = [\"192.0.2.1\"]", "priority");
    bad("vrid = 1\nvips = []", "no vips");
    bad("vrid = 1\nvips = [\"192.0.2.1\", \"2001:db8::1\"]", "mixes");
    bad(
        "vrid = 1\nvips = [\"192.0.2.1\"]\nadvert_interval = \"15ms\"",
        "centiseconds",
    );
    bad(
        "vrid = 1\nvips = [\"192.0.2.1\"]\nadvert_interval = \"1m\"",
        "centiseconds",
    );
    bad("vrid = 1\nvips = [\"192.0.2.1\"]\ncolour = 1", "colour");
    bad("vrid = 1\nversion = 4\nvips = [\"192.0.2.1\"]", "version 4");
    bad(
        "vrid = 1\nversion = 2\nvips = [\"2001:db8::1\"]",
        "IPv4 only",
    );
    bad(
        "vrid = 1\nversion = 2\nvips = [\"192.0.2.1\"]\nadvert_interval = \"100ms\"",
        "whole seconds",
    );
    bad(
        "vrid = 1\nversion = 2\nvips = [\"192.0.2.1\"]\nauth_pass = \"123456789\"",
        "1 to 8 bytes",
    );
    bad(
        "vrid = 1\nvips = [\"192.0.2.1\"]\nauth_pass = \"secret\"",
        "VRRPv2's",
    );
    let v4 = "vrid = 1\nvips = [\"192.0.2.1\"]\n";
    bad(
        &format!("{v4}unicast_peers = [\"2001:db8::2\"]"),
        "not ipv4",
    );
    bad(
        &format!("{v4}unicast_peers = [\"192.0.2.1\"]"),
        "not one of",
    );
    bad(
        &format!("{v4}unicast_peers = [\"224.0.0.18\"]"),
        "unicast address",
    );
    bad(
        &format!("{v4}unicast_src = \"192.0.2.12\""),
        "need unicast_peers",
    );
    bad(&format!("{v4}unicast_min_ttl = 255"), "need unicast_peers");
    bad(
        &format!("{v4}unicast_peers = [\"192.0.2.11\", \"192.0.2.11\"]"),
        "twice",
    );
    bad(
        &format!("{v4}unicast_peers = [\"192.0.2.11\"]\nunicast_src = \"192.0.2.11\""),
        "also a unicast peer",
    );
    let nine: Vec<String> = (1..=9).map(|i| format!("\"192.0.2.{}\"", 10 + i)).collect();
    bad(
        &format!("{v4}unicast_peers = [{}]", nine.join(", ")),
        "at most 8",
    );
    bad(
        "vrid = 1\nvips = [\"192.0.2.1\"]\n[[vrrp]]\nvrid = 1\nvips = [\"192.0.2.2\"]",
        "twice",
    );
    bad(
        "vrid = 1\nvips = [\"192.0.2.1\"]\n[heartbeat]\nauth = \"off\"\n\
         [pool]\nvips = [\"192.0.2.1\", \"192.0.2.9\"]",
        "one owner",
    );
}

#[test]
fn a_node_may_run_a_pool_and_vrrp_groups() {
    let text = "[node]\nid = 1\ninterface = \"eth0\"\n[heartbeat]\nauth = \"off\"\n\
                [pool]\nvips = [\"192.0.2.8\", \"192.0.2.9\"]\n[[vrrp]]\nvrid = 51\nvips = [\"192.0.2.1\"]\n";
    let c = Config::from_file(File::parse(text).unwrap()).unwrap();
    assert!(c.has_pool());
    assert_eq!((c.pool.vips.len(), c.vrrp.len()), (2, 1));
    assert_eq!(c.vrrp[0].interface(), "eth0");
    let mut vrrp_only = c.clone();
    vrrp_only.pool.vips.clear();
    assert_eq!(
        c.needs_restart(&vrrp_only),
        Some("whether this node runs a pool")
    );
}
