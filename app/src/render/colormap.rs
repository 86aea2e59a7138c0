//! Colour maps for attention weights, as 256-entry tables: the shader looks colours up in them
//! and tests decode rendered pixels back to weights through the same tables.

use serde::{Deserialize, Serialize};

pub const LUT_SIZE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ColorMap {
    /// Perceptually uniform, readable in greyscale print (matplotlib's default).
    #[default]
    Viridis,
    /// White for zero to black for the maximum, as in BertViz.
    Greys,
    /// Blue through white to red, for signed values drawn as (v + 1) / 2: the difference view.
    Diverging,
}

impl ColorMap {
    /// Every map the shader's table holds.
    pub const ALL: [ColorMap; 3] = [ColorMap::Viridis, ColorMap::Greys, ColorMap::Diverging];
    /// The maps a user picks for attention.
    pub const CHOICES: [ColorMap; 2] = [ColorMap::Viridis, ColorMap::Greys];

    pub fn index(self) -> u32 {
        match self {
            ColorMap::Viridis => 0,
            ColorMap::Greys => 1,
            ColorMap::Diverging => 2,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ColorMap::Viridis => "viridis",
            ColorMap::Greys => "greys",
            ColorMap::Diverging => "diverging",
        }
    }

    /// The colour of `t` in [0, 1], as sRGB bytes.
    pub fn sample(self, t: f32) -> [u8; 3] {
        let t = t.clamp(0.0, 1.0);
        match self {
            ColorMap::Viridis => viridis(t),
            ColorMap::Greys => {
                let v = (255.0 * (1.0 - t)).round() as u8;
                [v, v, v]
            }
            ColorMap::Diverging => diverging(t),
        }
    }

    /// The table the shader reads: entry i is the colour of i / 255.
    pub fn table(self) -> Vec<[u8; 3]> {
        (0..LUT_SIZE)
            .map(|i| self.sample(i as f32 / (LUT_SIZE - 1) as f32))
            .collect()
    }

    /// The position in [0, 1] of the table entry nearest to `rgb`, and how far it is (squared
    /// distance in bytes); a large distance means the pixel is not from this map.
    pub fn decode(self, rgb: [u8; 3]) -> (f32, u32) {
        self.table()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let d: u32 = (0..3)
                    .map(|k| (c[k] as i32 - rgb[k] as i32).pow(2) as u32)
                    .sum();
                (i as f32 / (LUT_SIZE - 1) as f32, d)
            })
            .min_by_key(|(_, d)| *d)
            .unwrap_or((0.0, u32::MAX))
    }
}

/// Every map's table, one after the other, as the shader's storage buffer (rgba f32).
pub fn all_tables_rgba() -> Vec<[f32; 4]> {
    ColorMap::ALL
        .iter()
        .flat_map(|m| m.table())
        .map(|c| {
            [
                c[0] as f32 / 255.0,
                c[1] as f32 / 255.0,
                c[2] as f32 / 255.0,
                1.0,
            ]
        })
        .collect()
}

/// Blue (59, 76, 192) at 0 through near-white (242, 242, 242) at 0.5 to red (180, 4, 38) at 1,
/// linear in sRGB on each side: negative differences blue, positive red, none white.
fn diverging(t: f32) -> [u8; 3] {
    const LOW: [f32; 3] = [59.0, 76.0, 192.0];
    const MID: [f32; 3] = [242.0, 242.0, 242.0];
    const HIGH: [f32; 3] = [180.0, 4.0, 38.0];
    let (from, to, u) = if t < 0.5 {
        (LOW, MID, t * 2.0)
    } else {
        (MID, HIGH, (t - 0.5) * 2.0)
    };
    [0, 1, 2].map(|k| (from[k] + (to[k] - from[k]) * u).round() as u8)
}

/// A polynomial fit to matplotlib's viridis (sRGB), accurate to about one byte.
fn viridis(t: f32) -> [u8; 3] {
    const C: [[f32; 3]; 7] = [
        [0.277_727_33, 0.005_407_344_5, 0.334_099_8],
        [0.105_093_04, 1.404_613_5, 1.384_590_2],
        [-0.330_861_83, 0.214_847_56, 0.095_095_16],
        [-4.634_230_5, -5.799_101, -19.332_441],
        [6.228_27, 14.179_933, 56.690_55],
        [4.776_385, -13.745_145, -65.353_03],
        [-5.435_456, 4.645_852_6, 26.312_435],
    ];
    let mut rgb = [0u8; 3];
    for (k, out) in rgb.iter_mut().enumerate() {
        let v = C.iter().rev().fold(0.0, |acc, c| acc * t + c[k]);
        *out = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_runs_from_dark_purple_to_yellow() {
        let [r0, g0, b0] = ColorMap::Viridis.sample(0.0);
        assert!(r0 < 80 && g0 < 20 && b0 > 60);
        let [r1, g1, b1] = ColorMap::Viridis.sample(1.0);
        assert!(r1 > 230 && g1 > 210 && b1 < 60);
    }

    #[test]
    fn every_table_entry_decodes_back_to_its_own_position() {
        for map in ColorMap::ALL {
            let table = map.table();
            for (i, c) in table.iter().enumerate() {
                let (t, d) = map.decode(*c);
                assert_eq!(d, 0);
                // Neighbouring entries may share a colour; they decode to the first of them.
                assert!(
                    (t - i as f32 / 255.0).abs() <= 2.0 / 255.0,
                    "{map:?} entry {i}"
                );
            }
        }
    }
}
