//! Memory amounts as people read them: whole MB below a gigabyte, GB with one
//! decimal above (binary units, as the reference's `*_mb` fields and `nvidia-smi`).

/// Bytes in one MB (MiB), the unit of the reference's `*_mb` fields.
pub const MB: u64 = 1 << 20;

/// `bytes` as `"512 MB"` or `"7.5 GB"`.
pub fn show(bytes: u64) -> String {
    let mb = bytes as f64 / MB as f64;
    if mb < 1024.0 {
        format!("{} MB", mb.round() as u64)
    } else {
        format!("{:.1} GB", mb / 1024.0)
    }
}

/// Whole MB as bytes, saturating.
pub fn from_mb(mb: f64) -> u64 {
    if mb.is_finite() && mb > 0.0 {
        (mb * MB as f64).min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// Bytes as (fractional) MB, the reference's unit.
pub fn to_mb(bytes: u64) -> f64 {
    bytes as f64 / MB as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_mb_below_a_gigabyte_and_gb_above() {
        assert_eq!(show(0), "0 MB");
        assert_eq!(show(512 * MB), "512 MB");
        assert_eq!(show(1023 * MB), "1023 MB");
        assert_eq!(show(1024 * MB), "1.0 GB");
        assert_eq!(show(7680 * MB), "7.5 GB");
    }

    #[test]
    fn megabytes_convert_both_ways_and_nonsense_is_zero() {
        assert_eq!(from_mb(1.5), 3 * MB / 2);
        assert_eq!(from_mb(-3.0), 0);
        assert_eq!(from_mb(f64::NAN), 0);
        assert!((to_mb(3 * MB / 2) - 1.5).abs() < 1e-12);
    }
}
