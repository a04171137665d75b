//! Parsers for command-line values shared by the example gateways.

use std::collections::BTreeMap;

/// Parses a listener port map such as `80=18080,443=18443`: Gateway listener port -> local port.
pub fn parse_port_map(text: &str) -> Result<BTreeMap<u16, u16>, String> {
    let mut map = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (from, to) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not PORT=LOCALPORT"))?;
        let from: u16 = from
            .trim()
            .parse()
            .map_err(|_| format!("{from:?} is not a port number"))?;
        let to: u16 = to
            .trim()
            .parse()
            .map_err(|_| format!("{to:?} is not a port number"))?;
        if from == 0 || to == 0 {
            return Err(format!("{pair:?}: port 0 cannot be mapped"));
        }
        if map.insert(from, to).is_some() {
            return Err(format!("port {from} is mapped twice"));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_maps() {
        let m = parse_port_map("80=18080, 443=18443").unwrap();
        assert_eq!(m.get(&80), Some(&18080));
        assert_eq!(m.get(&443), Some(&18443));
        assert!(parse_port_map("80").is_err());
        assert!(parse_port_map("80=x").is_err());
        assert!(parse_port_map("80=1,80=2").is_err());
        assert!(parse_port_map("0=1").is_err());
        assert!(parse_port_map("").unwrap().is_empty());
    }
}
