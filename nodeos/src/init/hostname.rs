//! The node's host name: from the settings, else derived from the first
//! Ethernet MAC address so it is stable across reboots and unique on a LAN.

pub fn choose(configured: Option<&str>) -> String {
    if let Some(name) = configured {
        return name.to_string();
    }
    if let Some(mac) = first_ethernet_mac() {
        return from_mac(&mac);
    }
    if let Ok(uuid) = std::fs::read_to_string("/sys/class/dmi/id/product_uuid") {
        let hex: String = uuid
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .take(6)
            .collect();
        if hex.len() == 6 {
            return format!("cloudos-{}", hex.to_ascii_lowercase());
        }
    }
    "cloudos".into()
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
}
