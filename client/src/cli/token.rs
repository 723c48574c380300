//! TEMPORARY until the token branch merges.
pub fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let m = match unit { "s" => 1, "m" => 60, "h" => 3600, "d" => 86400, _ => return Err(format!("bad unit in {s:?}")) };
    Ok(std::time::Duration::from_secs(n * m))
}
