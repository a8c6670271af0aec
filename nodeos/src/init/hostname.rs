//! The node's host name: from the settings, else derived from the first
//! Ethernet MAC address so it is stable across reboots and unique on a LAN.

pub fn choose(configured: Option<&str>) -> String {
    if let Some(name) = configured {
        return name.to_string();
    }
    if let Some(mac) = first_ethernet_mac() {
        return from_mac(&mac);
    }
    if let Some(name) = std::fs::read_to_string("/sys/class/dmi/id/product_uuid")
        .ok()
        .and_then(|uuid| from_hex_id(&uuid, HexEnd::First))
    {
        return name;
    }
    // Boards without a NIC driver or DMI (a Pi 3A+ or Zero 2 W, whose network is Wi-Fi):
    // the serial number the firmware puts in the device tree.
    if let Some(name) = std::fs::read("/sys/firmware/devicetree/base/serial-number")
        .ok()
        .and_then(|raw| from_hex_id(&String::from_utf8_lossy(&raw), HexEnd::Last))
    {
        return name;
    }
    "cloudos".into()
}

/// Which end of an id names the machine: a UUID's first digits vary, a serial number's
/// last ones (its first are zeros).
enum HexEnd {
    First,
    Last,
}

/// `cloudos-` and six hex digits of `id`, or `None` when it has fewer or only zeros.
fn from_hex_id(id: &str, end: HexEnd) -> Option<String> {
    let hex: Vec<char> = id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() < 6 || hex.iter().all(|&c| c == '0') {
        return None;
    }
    let six: String = match end {
        HexEnd::First => hex[..6].iter().collect(),
        HexEnd::Last => hex[hex.len() - 6..].iter().collect(),
    };
    Some(format!("cloudos-{six}"))
}

/// `52:54:00:12:34:56` → `cloudos-123456`.
pub fn from_mac(mac: &str) -> String {
    let hex: String = mac
        .split(':')
        .skip(3)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("cloudos-{hex}")
}

/// The MAC of the Ethernet link with the lowest interface index.
fn first_ethernet_mac() -> Option<String> {
    let mut best: Option<(u32, String)> = None;
    for entry in std::fs::read_dir("/sys/class/net").ok()?.flatten() {
        let dir = entry.path();
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .map(|s| s.trim().to_string())
                .ok()
        };
        // type 1 is ARPHRD_ETHER; loopback is 772.
        if read("type").as_deref() != Some("1") {
            continue;
        }
        let (Some(index), Some(mac)) = (
            read("ifindex").and_then(|i| i.parse::<u32>().ok()),
            read("address"),
        ) else {
            continue;
        };
        if mac == "00:00:00:00:00:00" {
            continue;
        }
        if best.as_ref().is_none_or(|(i, _)| index < *i) {
            best = Some((index, mac));
        }
    }
    best.map(|(_, mac)| mac)
}

pub fn set(name: &str) {
    if let Err(e) = nix::unistd::sethostname(name) {
        log::warn!("cannot set the host name to {name}: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mac_derived_names() {
        assert_eq!(super::from_mac("52:54:00:12:34:AB"), "cloudos-1234ab");
        assert_eq!(super::choose(Some("given")), "given");
    }

    #[test]
    fn ids_name_a_machine_without_a_mac() {
        use super::{from_hex_id, HexEnd};
        assert_eq!(
            from_hex_id("4c4c4544-0042-3510-8052-b4c04f4e3132\n", HexEnd::First).as_deref(),
            Some("cloudos-4c4c45")
        );
        // The Pi firmware's serial-number property: NUL-terminated, leading zeros.
        assert_eq!(
            from_hex_id("00000000a1b2c3d4\0", HexEnd::Last).as_deref(),
            Some("cloudos-b2c3d4")
        );
        assert_eq!(from_hex_id("0000000000000000\0", HexEnd::Last), None);
        assert_eq!(from_hex_id("abc", HexEnd::First), None);
    }
}
