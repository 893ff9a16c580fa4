//! The geometry of a 2-D convolution on NCHW tensors, shared by the dense and depthwise
//! kernels.
//!
//! Input `[n, c, h, w]`, weight `[o, c / groups, kh, kw]`, output `[n, o, oh, ow]` with
//! `oh = (h + pad_top + pad_bottom - dilation * (kh - 1) - 1) / stride + 1` (and the same for
//! the width). Padding may be asymmetric (TensorFlow's SAME pads the bottom/right more); only
//! the top/left padding moves the sampling grid, the bottom/right only sets the output size.

/// Sizes, strides, paddings and dilations of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    /// `[top, left]`.
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// The geometry of `x [n, c, h, w]` convolved with `weight [o, c / groups, kh, kw]`;
    /// `pad` is `[(top, bottom), (left, right)]`. `None` if the shapes do not fit together
    /// or the output would be empty.
    pub fn new(
        x: [usize; 4],
        weight: [usize; 4],
        stride: [usize; 2],
        pad: [(usize, usize); 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> Option<Self> {
        let [n, c, h, w] = x;
        let [o, cg, kh, kw] = weight;
        let positive = stride.iter().chain(&dilation).all(|&s| s > 0);
        if !positive || groups == 0 || c != cg * groups || o % groups != 0 || kh == 0 || kw == 0 {
            return None;
        }
        let out = |size: usize, (before, after): (usize, usize), k: usize, s: usize, d: usize| {
            let span = d * (k - 1) + 1;
            (size + before + after).checked_sub(span).map(|v| v / s + 1)
        };
        let oh = out(h, pad[0], kh, stride[0], dilation[0])?;
        let ow = out(w, pad[1], kw, stride[1], dilation[1])?;
        Some(ConvGeom {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            pad: [pad[0].0, pad[1].0],
            dilation,
            groups,
            oh,
            ow,
        })
    }

    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }
    /// Rows of one group's im2col matrix: `cg * kh * kw`.
    pub fn ckk(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    pub fn in_plane(&self) -> usize {
        self.h * self.w
    }
    pub fn out_plane(&self) -> usize {
        self.oh * self.ow
    }
    /// One channel per group and one output per channel (MobileNet's depthwise layers).
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.c && self.o == self.c
    }
    /// A 1x1 convolution that reads every input pixel once: the input plane is the im2col
    /// matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == [1, 1]
            && self.pad == [0, 0]
            && self.oh == self.h
            && self.ow == self.w
    }

    /// The output rows `oh` whose input row `oh * stride - pad + k * dilation` lies inside the
    /// image, for kernel row `k`, as a range (possibly empty).
    pub fn rows_for(&self, k: usize) -> std::ops::Range<usize> {
        valid(
            self.oh,
            self.h,
            self.stride[0],
            self.pad[0],
            k * self.dilation[0],
        )
    }
    /// [`Self::rows_for`] along the width.
    pub fn cols_for(&self, k: usize) -> std::ops::Range<usize> {
        valid(
            self.ow,
            self.w,
            self.stride[1],
            self.pad[1],
            k * self.dilation[1],
        )
    }
}

/// The outputs `i` in `0..count` for which `i * stride + offset - pad` lies in `0..size`.
fn valid(
    count: usize,
    size: usize,
    stride: usize,
    pad: usize,
    offset: usize,
) -> std::ops::Range<usize> {
    // i * stride + offset >= pad  <=>  i >= ceil((pad - offset) / stride)
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    // i * stride + offset - pad <= size - 1  <=>  i <= (size - 1 + pad - offset) / stride
    let hi = match (size + pad).checked_sub(offset + 1) {
        Some(top) => (top / stride + 1).min(count),
        None => 0,
    };
    lo.min(hi)..hi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_pytorch() {
        // 3x3, stride 2, padding 1 at 160: 80 (torchvision's first MobileNetV2 layer).
        let g = ConvGeom::new(
            [2, 3, 160, 160],
            [32, 3, 3, 3],
            [2, 2],
            [(1, 1), (1, 1)],
            [1, 1],
            1,
        );
        assert_eq!(g.map(|g| (g.oh, g.ow)), Some((80, 80)));
        // TensorFlow SAME at an even size with stride 2 pads (0, 1).
        let g = ConvGeom::new(
            [1, 8, 10, 10],
            [8, 1, 3, 3],
            [2, 2],
            [(0, 1), (0, 1)],
            [1, 1],
            8,
        );
        assert_eq!(g.map(|g| (g.oh, g.is_depthwise())), Some((5, true)));
        // A kernel larger than the padded input has no output.
        assert_eq!(
            ConvGeom::new(
                [1, 1, 2, 2],
                [1, 1, 5, 5],
                [1, 1],
                [(0, 0), (0, 0)],
                [1, 1],
                1
            ),
            None
        );
        // Channels that do not split into the groups.
        assert_eq!(
            ConvGeom::new(
                [1, 6, 4, 4],
                [4, 4, 1, 1],
                [1, 1],
                [(0, 0), (0, 0)],
                [1, 1],
                2
            ),
            None
        );
    }

    #[test]
    fn valid_ranges_are_exactly_the_inside_taps() {
        for (count, size, stride, pad, offset) in [
            (5, 10, 2, 1, 0),
            (5, 10, 2, 1, 2),
            (7, 7, 1, 3, 6),
            (3, 4, 3, 0, 1),
            (4, 2, 1, 2, 0),
        ] {
            let r = valid(count, size, stride, pad, offset);
            for i in 0..count {
                let pos = (i * stride + offset) as isize - pad as isize;
                assert_eq!(
                    r.contains(&i),
                    pos >= 0 && pos < size as isize,
                    "{count} {size} {stride} {pad} {offset} i={i}"
                );
            }
        }
    }
}
