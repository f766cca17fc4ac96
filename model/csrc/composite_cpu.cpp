// Front-to-back alpha compositing of sorted tile lists on the CPU, forward and backward.
//
// The same maths as model/rasterize_torch.py's _composite (gsplat 1.5's classic path), one
// tile per OpenMP task: the tile's Gaussians are the outer loop and its pixels the inner one,
// so the inner loop runs over contiguous per-pixel state and the whole tile stops as soon as
// every pixel is saturated. A Gaussian visits only the tile's pixels in the bounding box of
// its footprint, and reads its values from one packed row. The backward pass walks each list
// back to front from the last Gaussian each pixel used, recovering the transmittance by
// division, as gsplat's CUDA backward does. Gradients are summed per thread and reduced in
// thread order, so a run is deterministic for a given thread count.

#include <torch/extension.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr float kAlphaMin = 1.0f / 255.0f;
constexpr float kAlphaMax = 0.999f;
constexpr float kTransmittanceMin = 1e-4f;
constexpr int64_t kAhead = 8;  // list entries ahead whose Gaussian is prefetched

struct Grid {
  int64_t tiles_x, tiles_per_view, width, height, tile;
};

// Pixel-centre coordinates of pixel p of a tile whose first pixel is (x0, y0).
inline void pixel_centre(const Grid& grid, int64_t local, int p, float* x, float* y, bool* inside) {
  const int64_t col = (local % grid.tiles_x) * grid.tile + p % grid.tile;
  const int64_t row = (local / grid.tiles_x) * grid.tile + p / grid.tile;
  *x = static_cast<float>(col) + 0.5f;
  *y = static_cast<float>(row) + 0.5f;
  *inside = col < grid.width && row < grid.height;
}

inline int64_t pixel_index(const Grid& grid, int64_t view, int64_t local, int p) {
  const int64_t col = (local % grid.tiles_x) * grid.tile + p % grid.tile;
  const int64_t row = (local / grid.tiles_x) * grid.tile + p / grid.tile;
  return view * grid.height * grid.width + row * grid.width + col;
}

// sigma of the Gaussian at (mx, my) with conic (a, b, c) at each of a tile's P pixels
// (centres x, y): one branch-free loop the compiler vectorises.
inline void tile_sigmas(float mx, float my, float a, float b, float c, const float* x, const float* y, float* sigma,
                        int P) {
#pragma omp simd
  for (int p = 0; p < P; ++p) {
    const float dx = mx - x[p], dy = my - y[p];
    sigma[p] = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
  }
}

// A sigma beyond which opacity * exp(-sigma) < 1/255 for sure: most pixel-Gaussian pairs of
// a tile lie outside the footprint, and this skips their exp. The margin keeps pairs at the
// threshold for the exact test, so the result is the same.
inline float footprint(float opacity) {
  return opacity > kAlphaMin ? std::log(opacity / kAlphaMin) + 1e-3f : -1.0f;
}

// Each Gaussian's values side by side, [M, 6 + F]: mx, my, a, b, c, opacity, features. The
// lists visit Gaussians in depth order, so every entry is a fetch from far away, and one row
// is fewer cache lines than five arrays.
std::vector<float> packed_rows(const torch::Tensor& means2d, const torch::Tensor& conics,
                               const torch::Tensor& opacities, const torch::Tensor& features) {
  const int64_t M = means2d.size(0), F = features.size(1), stride = 6 + F;
  std::vector<float> packed(static_cast<size_t>(M * stride));
  const float* m = means2d.data_ptr<float>();
  const float* q = conics.data_ptr<float>();
  const float* o = opacities.data_ptr<float>();
  const float* f = features.data_ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t id = 0; id < M; ++id) {
    float* row = &packed[id * stride];
    row[0] = m[2 * id];
    row[1] = m[2 * id + 1];
    std::copy(q + 3 * id, q + 3 * id + 3, row + 2);
    row[5] = o[id];
    std::copy(f + id * F, f + (id + 1) * F, row + 6);
  }
  return packed;
}

// The rows [r0, r1] and columns [c0, c1] of a tile's pixels that can lie in a Gaussian's
// footprint sigma <= reach: the bounding box of that ellipse (sigma = d^T Q d / 2 with
// Q = [[a, b], [b, c]], so |dx| <= sqrt(2 reach c / det Q)), widened by 1% and 0.01 px, far
// more than float's rounding of sigma, so every pixel left out has sigma > reach as computed
// and the loops would have skipped it. False when no pixel can be in it. A nearly degenerate
// conic, whose determinant float cannot be trusted, keeps the whole tile.
inline bool footprint_box(const Grid& grid, int64_t local, float mx, float my, float a, float b, float c,
                          float reach, int* r0, int* r1, int* c0, int* c1) {
  const int last = static_cast<int>(grid.tile) - 1;
  *r0 = *c0 = 0;
  *r1 = *c1 = last;
  if (reach < 0.0f) return false;
  const float det = a * c - b * b;
  if (!(a > 0.0f && c > 0.0f && det > 1e-3f * a * c && std::isfinite(mx) && std::isfinite(my))) return true;
  const float ex = 1.01f * std::sqrt(2.0f * reach * c / det) + 0.01f;
  const float ey = 1.01f * std::sqrt(2.0f * reach * a / det) + 0.01f;
  // the centre of the tile's pixel (col, row) is (x0 + col, y0 + row)
  const float x0 = static_cast<float>((local % grid.tiles_x) * grid.tile) + 0.5f;
  const float y0 = static_cast<float>((local / grid.tiles_x) * grid.tile) + 0.5f;
  const float lo_x = std::ceil(mx - ex - x0), hi_x = std::floor(mx + ex - x0);
  const float lo_y = std::ceil(my - ey - y0), hi_y = std::floor(my + ey - y0);
  if (hi_x < 0.0f || hi_y < 0.0f || lo_x > last || lo_y > last) return false;
  *c0 = static_cast<int>(std::max(lo_x, 0.0f));
  *c1 = static_cast<int>(std::min(hi_x, static_cast<float>(last)));
  *r0 = static_cast<int>(std::max(lo_y, 0.0f));
  *r1 = static_cast<int>(std::min(hi_y, static_cast<float>(last)));
  return true;
}

}  // namespace

// Returns features [V*H*W, F], alpha [V*H*W], the final transmittance [V*H*W] and the number
// of list entries each pixel consumed [V*H*W] (int32), for the backward pass.
std::vector<torch::Tensor> composite_forward(
    torch::Tensor means2d,    // [M, 2]
    torch::Tensor conics,     // [M, 3]
    torch::Tensor opacities,  // [M]
    torch::Tensor features,   // [M, F]
    torch::Tensor starts,     // [tiles + 1] int64: tile t's list is gauss[starts[t]:starts[t+1]]
    torch::Tensor gauss,      // [I] int64, flat Gaussian ids
    int64_t views, int64_t tiles_x, int64_t tiles_y, int64_t width, int64_t height, int64_t tile) {
  const Grid grid{tiles_x, tiles_x * tiles_y, width, height, tile};
  const int64_t F = features.size(1), pixels = views * height * width, tiles = views * grid.tiles_per_view;
  auto image = torch::zeros({pixels, F}, features.options());
  auto alpha_out = torch::zeros({pixels}, features.options());
  auto final_t = torch::ones({pixels}, features.options());
  auto used = torch::zeros({pixels}, features.options().dtype(torch::kInt32));
  const std::vector<float> packed = packed_rows(means2d, conics, opacities, features);
  const float* rows = packed.data();
  const int64_t stride = 6 + F;
  const int64_t* s = starts.data_ptr<int64_t>();
  const int64_t* g = gauss.data_ptr<int64_t>();
  float* out = image.data_ptr<float>();
  float* out_alpha = alpha_out.data_ptr<float>();
  float* out_t = final_t.data_ptr<float>();
  int32_t* out_used = used.data_ptr<int32_t>();
  const int P = static_cast<int>(tile * tile);

#pragma omp parallel
  {
    std::vector<float> T(P), acc(P * F), wsum(P), px(P), py(P), sig(P);
    std::vector<int32_t> last(P);
    std::vector<char> done(P), inside(P);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t begin = s[t], end = s[t + 1];
      if (begin == end) continue;
      const int64_t view = t / grid.tiles_per_view, local = t % grid.tiles_per_view;
      int active = 0;
      for (int p = 0; p < P; ++p) {
        bool in;
        pixel_centre(grid, local, p, &px[p], &py[p], &in);
        inside[p] = in;
        T[p] = 1.0f;
        wsum[p] = 0.0f;
        last[p] = 0;
        done[p] = 0;
        ++active;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t k = begin; k < end && active > 0; ++k) {
        if (k + kAhead < end) __builtin_prefetch(rows + g[k + kAhead] * stride);
        const float* values = rows + g[k] * stride;
        const float mx = values[0], my = values[1], a = values[2], b = values[3], c = values[4];
        const float op = values[5], *fk = values + 6;
        const float reach = footprint(op);
        int r0, r1, c0, c1;
        if (!footprint_box(grid, local, mx, my, a, b, c, reach, &r0, &r1, &c0, &c1)) continue;
        const int width = static_cast<int>(tile), first = r0 * width;
        tile_sigmas(mx, my, a, b, c, &px[first], &py[first], &sig[first], (r1 - r0 + 1) * width);
        for (int r = r0; r <= r1; ++r)
        for (int p = r * width + c0; p <= r * width + c1; ++p) {
          const float sigma = sig[p];
          if (done[p] || sigma < 0.0f || sigma > reach) continue;
          const float alpha = std::min(kAlphaMax, op * std::exp(-sigma));
          if (alpha < kAlphaMin) continue;
          const float next = T[p] * (1.0f - alpha);
          if (next <= kTransmittanceMin) {  // stop before this Gaussian
            done[p] = 1;
            --active;
            continue;
          }
          const float w = alpha * T[p];
          float* ap = &acc[p * F];
          for (int64_t ch = 0; ch < F; ++ch) ap[ch] += w * fk[ch];
          wsum[p] += w;
          T[p] = next;
          last[p] = static_cast<int32_t>(k - begin + 1);
        }
      }
      for (int p = 0; p < P; ++p) {
        if (!inside[p]) continue;
        const int64_t i = pixel_index(grid, view, local, p);
        std::copy(&acc[p * F], &acc[p * F] + F, out + i * F);
        out_alpha[i] = wsum[p];
        out_t[i] = T[p];
        out_used[i] = last[p];
      }
    }
  }
  return {image, alpha_out, final_t, used};
}

// Gradients of the loss with respect to means2d, conics, opacities and features, given its
// gradients with respect to the forward pass's features and alpha.
std::vector<torch::Tensor> composite_backward(
    torch::Tensor grad_image,  // [V*H*W, F]
    torch::Tensor grad_alpha,  // [V*H*W]
    torch::Tensor means2d, torch::Tensor conics, torch::Tensor opacities, torch::Tensor features,
    torch::Tensor starts, torch::Tensor gauss,
    torch::Tensor final_t,  // [V*H*W] from the forward pass
    torch::Tensor used,     // [V*H*W] int32 from the forward pass
    int64_t views, int64_t tiles_x, int64_t tiles_y, int64_t width, int64_t height, int64_t tile) {
  const Grid grid{tiles_x, tiles_x * tiles_y, width, height, tile};
  const int64_t M = means2d.size(0), F = features.size(1), tiles = views * grid.tiles_per_view;
  const int64_t stride = 6 + F;  // per Gaussian: mx, my, a, b, c, opacity, features
  const int threads = omp_get_max_threads();
  // Per-thread sums, so no two threads add into one Gaussian's gradient.
  std::vector<float> sums(static_cast<size_t>(threads) * M * stride, 0.0f);
  const float* gimg = grad_image.data_ptr<float>();
  const float* galpha = grad_alpha.data_ptr<float>();
  const std::vector<float> packed = packed_rows(means2d, conics, opacities, features);
  const float* rows = packed.data();
  const int64_t* s = starts.data_ptr<int64_t>();
  const int64_t* g = gauss.data_ptr<int64_t>();
  const float* t_end = final_t.data_ptr<float>();
  const int32_t* n_used = used.data_ptr<int32_t>();
  const int P = static_cast<int>(tile * tile);

#pragma omp parallel
  {
    float* mine = sums.data() + static_cast<size_t>(omp_get_thread_num()) * M * stride;
    std::vector<float> T(P), T_final(P), later(P * F), grad(P * F), grad_a(P), px(P), py(P), sig(P);
    std::vector<int32_t> last(P);
    std::vector<float> entry(stride);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t begin = s[t], end = s[t + 1];
      if (begin == end) continue;
      const int64_t view = t / grid.tiles_per_view, local = t % grid.tiles_per_view;
      int32_t longest = 0;
      for (int p = 0; p < P; ++p) {
        bool in;
        pixel_centre(grid, local, p, &px[p], &py[p], &in);
        last[p] = 0;
        if (!in) continue;  // pixels beyond the image have no gradient
        const int64_t i = pixel_index(grid, view, local, p);
        last[p] = n_used[i];
        T[p] = T_final[p] = t_end[i];
        grad_a[p] = galpha[i];
        std::copy(gimg + i * F, gimg + (i + 1) * F, &grad[p * F]);
        longest = std::max(longest, last[p]);
      }
      std::fill(later.begin(), later.end(), 0.0f);
      for (int32_t k = longest - 1; k >= 0; --k) {
        if (k >= kAhead) __builtin_prefetch(rows + g[begin + k - kAhead] * stride);
        const int64_t id = g[begin + k];
        const float* values = rows + id * stride;
        const float mx = values[0], my = values[1], a = values[2], b = values[3], c = values[4];
        const float op = values[5], *fk = values + 6;
        const float reach = footprint(op);
        int r0, r1, c0, c1;
        if (!footprint_box(grid, local, mx, my, a, b, c, reach, &r0, &r1, &c0, &c1)) continue;
        std::fill(entry.begin(), entry.end(), 0.0f);
        const int width = static_cast<int>(tile), first = r0 * width;
        tile_sigmas(mx, my, a, b, c, &px[first], &py[first], &sig[first], (r1 - r0 + 1) * width);
        bool touched = false;
        for (int r = r0; r <= r1; ++r)
        for (int p = r * width + c0; p <= r * width + c1; ++p) {
          const float sigma = sig[p];
          if (k >= last[p] || sigma < 0.0f || sigma > reach) continue;
          const float dx = mx - px[p], dy = my - py[p];
          const float falloff = std::exp(-sigma);
          const float raw = op * falloff;
          const float alpha = std::min(kAlphaMax, raw);
          if (alpha < kAlphaMin) continue;
          touched = true;
          const float keep = 1.0f - alpha;
          const float before = T[p] / keep;  // the transmittance in front of this Gaussian
          const float w = alpha * before;
          const float* gp = &grad[p * F];
          float* lp = &later[p * F];
          // d loss / d alpha: this Gaussian's own colour, less what it hides behind it, and
          // the accumulated alpha's share (d(1 - T_final) / d alpha = T_final / (1 - alpha))
          float d_alpha = grad_a[p] * T_final[p] / keep;
          for (int64_t ch = 0; ch < F; ++ch) {
            entry[6 + ch] += gp[ch] * w;
            d_alpha += gp[ch] * (fk[ch] * before - lp[ch] / keep);
            lp[ch] += fk[ch] * w;
          }
          T[p] = before;
          if (raw > kAlphaMax) continue;  // clamped: alpha does not move with its inputs
          entry[5] += d_alpha * falloff;
          const float d_sigma = -alpha * d_alpha;
          entry[0] += d_sigma * (a * dx + b * dy);
          entry[1] += d_sigma * (c * dy + b * dx);
          entry[2] += d_sigma * 0.5f * dx * dx;
          entry[3] += d_sigma * dx * dy;
          entry[4] += d_sigma * 0.5f * dy * dy;
        }
        if (!touched) continue;
        float* dst = mine + id * stride;
        for (int64_t j = 0; j < stride; ++j) dst[j] += entry[j];
      }
    }
  }
  auto grad_means = torch::zeros({M, 2}, means2d.options());
  auto grad_conics = torch::zeros({M, 3}, conics.options());
  auto grad_opacities = torch::zeros({M}, opacities.options());
  auto grad_features = torch::zeros({M, F}, features.options());
  float* gm = grad_means.data_ptr<float>();
  float* gq = grad_conics.data_ptr<float>();
  float* go = grad_opacities.data_ptr<float>();
  float* gf = grad_features.data_ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t id = 0; id < M; ++id) {
    for (int th = 0; th < threads; ++th) {  // in thread order: the same sums every run
      const float* src = sums.data() + (static_cast<size_t>(th) * M + id) * stride;
      gm[2 * id] += src[0];
      gm[2 * id + 1] += src[1];
      for (int j = 0; j < 3; ++j) gq[3 * id + j] += src[2 + j];
      go[id] += src[5];
      for (int64_t ch = 0; ch < F; ++ch) gf[id * F + ch] += src[6 + ch];
    }
  }
  return {grad_means, grad_conics, grad_opacities, grad_features};
}

// The tile lists: (starts [V * tiles + 1], gauss [I]) with tile t's Gaussians, as flat ids
// view * N + n, in gauss[starts[t]:starts[t + 1]], front to back (ties in id order). The
// same lists as model/rasterize_torch.py's _tile_intersections, which sorts its pairs by
// depth and then, stably, by tile.
std::vector<torch::Tensor> tile_lists(
    torch::Tensor means2d,  // [V, N, 2] float
    torch::Tensor depths,   // [V, N] float
    torch::Tensor radii,    // [V, N, 2] int64, 0 where culled
    torch::Tensor visible,  // [V, N] bool
    int64_t tiles_x, int64_t tiles_y, int64_t tile) {
  const int64_t V = means2d.size(0), N = means2d.size(1), per_view = tiles_x * tiles_y;
  auto m = means2d.contiguous();
  auto d = depths.contiguous();
  auto r = radii.contiguous();
  auto vis = visible.contiguous();
  const float* mp = m.data_ptr<float>();
  const float* dp = d.data_ptr<float>();
  const int64_t* rp = r.data_ptr<int64_t>();
  const bool* vp = vis.data_ptr<bool>();
  const float size = static_cast<float>(tile);
  std::vector<int64_t> rect(static_cast<size_t>(V * N) * 4);  // x0, x1, y0, y1 per Gaussian
  auto starts = torch::zeros({V * per_view + 1}, torch::kInt64);
  int64_t* sp = starts.data_ptr<int64_t>();
  auto clamp = [](float value, int64_t high) {
    return std::min<int64_t>(std::max<int64_t>(static_cast<int64_t>(value), 0), high);
  };
  // Views are counted and filled in parallel: each writes only its own tiles' counters and
  // lists, and within a view the ids still go in in order.
#pragma omp parallel for schedule(static)
  for (int64_t view = 0; view < V; ++view) {
    for (int64_t id = view * N; id < (view + 1) * N; ++id) {
      int64_t* box = &rect[id * 4];
      if (!vp[id]) {
        box[0] = box[1] = box[2] = box[3] = 0;
        continue;
      }
      const float u = mp[2 * id] / size, v = mp[2 * id + 1] / size;
      const float rx = static_cast<float>(rp[2 * id]) / size, ry = static_cast<float>(rp[2 * id + 1]) / size;
      box[0] = clamp(std::floor(u - rx), tiles_x);
      box[1] = clamp(std::ceil(u + rx), tiles_x);
      box[2] = clamp(std::floor(v - ry), tiles_y);
      box[3] = clamp(std::ceil(v + ry), tiles_y);
      for (int64_t row = box[2]; row < box[3]; ++row)
        for (int64_t col = box[0]; col < box[1]; ++col) ++sp[view * per_view + row * tiles_x + col + 1];
    }
  }
  for (int64_t t = 0; t < V * per_view; ++t) sp[t + 1] += sp[t];
  auto gauss = torch::empty({sp[V * per_view]}, torch::kInt64);
  int64_t* gp = gauss.data_ptr<int64_t>();
  std::vector<int64_t> cursor(sp, sp + V * per_view);
#pragma omp parallel for schedule(static)
  for (int64_t view = 0; view < V; ++view) {
    // in id order, so each list starts in id order
    for (int64_t id = view * N; id < (view + 1) * N; ++id) {
      const int64_t* box = &rect[id * 4];
      for (int64_t row = box[2]; row < box[3]; ++row)
        for (int64_t col = box[0]; col < box[1]; ++col) gp[cursor[view * per_view + row * tiles_x + col]++] = id;
    }
  }
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t t = 0; t < V * per_view; ++t)
    std::stable_sort(gp + sp[t], gp + sp[t + 1], [dp](int64_t i, int64_t j) { return dp[i] < dp[j]; });
  return {starts, gauss};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("tile_lists", &tile_lists, "sorted tile lists");
  module.def("forward", &composite_forward, "tile compositing, forward");
  module.def("backward", &composite_backward, "tile compositing, backward");
}
