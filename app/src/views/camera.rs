//! The query-key scatter's camera: pan and zoom in 2D, an orbit around the cloud in 3D. It
//! gives the matrix the scatter shader places points with, and the same matrix places them on
//! the host for hovering and clicking, so what is under the mouse is what is drawn there.

use serde::{Deserialize, Serialize};

/// Column-major 4 × 4, as WGSL's mat4x4 reads it.
pub type Mat4 = [[f32; 4]; 4];

fn mul(a: &Mat4, b: &Mat4) -> Mat4 {
    let mut out = [[0.0; 4]; 4];
    for (c, column) in out.iter_mut().enumerate() {
        for (r, v) in column.iter_mut().enumerate() {
            *v = (0..4).map(|k| a[k][r] * b[c][k]).sum();
        }
    }
    out
}

/// The matrix with `rows` given row by row.
fn from_rows(rows: [[f32; 4]; 4]) -> Mat4 {
    let mut m = [[0.0; 4]; 4];
    for (r, row) in rows.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            m[c][r] = v;
        }
    }
    m
}

/// `m` applied to (x, y, z, 1).
pub fn apply(m: &Mat4, p: [f32; 3]) -> [f32; 4] {
    let mut out = [0.0; 4];
    for (r, o) in out.iter_mut().enumerate() {
        *o = m[0][r] * p[0] + m[1][r] * p[1] + m[2][r] * p[2] + m[3][r];
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Camera {
    /// The view's centre in fitted units (the cloud spans about -1..1).
    pub pan: [f32; 2],
    pub zoom: f32,
    /// 3D: turns about the vertical and horizontal axes, radians.
    pub yaw: f32,
    pub pitch: f32,
}

impl Default for Camera {
    fn default() -> Self {
        Self {
            pan: [0.0, 0.0],
            zoom: 1.0,
            yaw: 0.6,
            pitch: 0.35,
        }
    }
}

/// How far the 3D eye sits from the cloud's centre, in fitted units.
const EYE_DISTANCE: f32 = 3.5;

impl Camera {
    /// Data coordinates → clip space of a `width` × `height` rectangle, for a cloud with this
    /// centre and radius, keeping x and y at one scale.
    pub fn transform(
        &self,
        centre: [f32; 3],
        radius: f32,
        three_d: bool,
        width: f32,
        height: f32,
    ) -> Mat4 {
        let s = 0.92 / radius.max(1e-12);
        let fit = from_rows([
            [s, 0.0, 0.0, -centre[0] * s],
            [0.0, s, 0.0, -centre[1] * s],
            [
                0.0,
                0.0,
                if three_d { s } else { 0.0 },
                if three_d { -centre[2] * s } else { 0.0 },
            ],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        let short = width.min(height).max(1.0);
        let (ax, ay) = (short / width.max(1.0), short / height.max(1.0));
        let z = self.zoom;
        // Zoom about the pan point, then squeeze the longer side.
        let view = from_rows([
            [z * ax, 0.0, 0.0, -self.pan[0] * z * ax],
            [0.0, z * ay, 0.0, -self.pan[1] * z * ay],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        if !three_d {
            return mul(&view, &fit);
        }
        let (sy, cy) = self.yaw.sin_cos();
        let (sp, cp) = self.pitch.sin_cos();
        let yaw = from_rows([
            [cy, 0.0, sy, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [-sy, 0.0, cy, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        let pitch = from_rows([
            [1.0, 0.0, 0.0, 0.0],
            [0.0, cp, -sp, 0.0],
            [0.0, sp, cp, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        // The eye looks down -z from EYE_DISTANCE; w = distance in front of it, so that x / w
        // and y / w are the perspective division. The focal length keeps the centre's scale.
        let f = EYE_DISTANCE;
        let perspective = from_rows([
            [f, 0.0, 0.0, 0.0],
            [0.0, f, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
            [0.0, 0.0, -1.0, EYE_DISTANCE],
        ]);
        mul(&view, &mul(&perspective, &mul(&pitch, &mul(&yaw, &fit))))
    }

    /// Moves the view by a drag of (dx, dy) in a rectangle of this size (pixels or points).
    pub fn drag(&mut self, dx: f32, dy: f32, width: f32, height: f32, orbit: bool) {
        let short = width.min(height).max(1.0);
        if orbit {
            self.yaw += dx / short * 3.0;
            self.pitch = (self.pitch + dy / short * 3.0).clamp(-1.55, 1.55);
        } else {
            self.pan[0] -= 2.0 * dx / short / self.zoom;
            self.pan[1] += 2.0 * dy / short / self.zoom;
        }
    }

    /// Zooms by `factor` keeping the point at `at` (clip-space x, y of the rectangle) still.
    pub fn zoom_at(&mut self, factor: f32, at: [f32; 2], width: f32, height: f32) {
        let short = width.min(height).max(1.0);
        let (ax, ay) = (short / width.max(1.0), short / height.max(1.0));
        let before = [
            at[0] / (self.zoom * ax) + self.pan[0],
            at[1] / (self.zoom * ay) + self.pan[1],
        ];
        self.zoom = (self.zoom * factor).clamp(0.05, 5000.0);
        self.pan = [
            before[0] - at[0] / (self.zoom * ax),
            before[1] - at[1] / (self.zoom * ay),
        ];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_ndc(m: &Mat4, p: [f32; 3]) -> [f32; 2] {
        let c = apply(m, p);
        [c[0] / c[3], c[1] / c[3]]
    }

    #[test]
    fn the_fitted_cloud_spans_the_short_side_and_its_centre_is_the_middle() {
        let cam = Camera::default();
        let m = cam.transform([10.0, 20.0, 0.0], 5.0, false, 200.0, 100.0);
        assert_eq!(to_ndc(&m, [10.0, 20.0, 0.0]), [0.0, 0.0]);
        let top = to_ndc(&m, [10.0, 25.0, 0.0]);
        assert!((top[1] - 0.92).abs() < 1e-5, "{top:?}");
        let right = to_ndc(&m, [15.0, 20.0, 0.0]);
        assert!(
            (right[0] - 0.46).abs() < 1e-5,
            "x squeezed by the aspect: {right:?}"
        );
    }

    #[test]
    fn zooming_at_a_point_keeps_it_under_the_mouse() {
        let mut cam = Camera::default();
        let m = cam.transform([0.0; 3], 1.0, false, 100.0, 100.0);
        let p = [0.3, -0.2, 0.0];
        let before = to_ndc(&m, p);
        cam.zoom_at(3.0, before, 100.0, 100.0);
        let after = to_ndc(&cam.transform([0.0; 3], 1.0, false, 100.0, 100.0), p);
        assert!((before[0] - after[0]).abs() < 1e-5 && (before[1] - after[1]).abs() < 1e-5);
    }

    #[test]
    fn in_3d_the_centre_stays_put_and_nearer_points_look_larger() {
        let cam = Camera {
            yaw: 0.0,
            pitch: 0.0,
            ..Default::default()
        };
        let m = cam.transform([0.0; 3], 1.0, true, 100.0, 100.0);
        assert_eq!(to_ndc(&m, [0.0; 3]), [0.0, 0.0]);
        let near = to_ndc(&m, [0.5, 0.0, 0.5]);
        let far = to_ndc(&m, [0.5, 0.0, -0.5]);
        assert!(near[0] > far[0], "{near:?} vs {far:?}");
    }
}
