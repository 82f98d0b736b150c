// AdamW, gradient clipping and the learning-rate / z-loss schedules against f64 references.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "framework/device.h"
#include "tests/support/check.h"
#include "trainers/adamw.h"
#include "trainers/grad_clip.h"
#include "trainers/lr_schedule.h"
#include "trainers/z_loss_schedule.h"

namespace zt {
namespace {

TEST(LrSchedule, WarmupThenCosineToMinLr) {
  LrSchedule s{1e-3, 1e-4, 10, 110};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-4);  // (0 + 1) / 10 of the peak: the first step already moves
  EXPECT_DOUBLE_EQ(s.at(4), 5e-4);
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);  // cosine starts at the peak
  EXPECT_NEAR(s.at(60), 0.5 * (1e-3 + 1e-4), 1e-15);  // halfway
  EXPECT_NEAR(s.at(110), 1e-4, 1e-15);
  EXPECT_NEAR(s.at(500), 1e-4, 1e-15);  // held after max_steps
  for (int64_t t = 11; t < 110; ++t) EXPECT_LT(s.at(t), s.at(t - 1)) << t;
  LrSchedule no_warmup{1e-3, 0, 0, 100};
  EXPECT_DOUBLE_EQ(no_warmup.at(0), 1e-3);
  EXPECT_NEAR(no_warmup.at(25), 0.5e-3 * (1 + std::cos(M_PI / 4)), 1e-15);
}

TEST(ZLossSchedule, ConstantAndLinearWarmup) {
  ZLossSchedule c{"constant", 1e-4, 0, 0};
  EXPECT_EQ(c.at(0), 1e-4);
  EXPECT_EQ(c.at(1000), 1e-4);
  ZLossSchedule w{"linear_warmup", 1e-3, 1e-5, 100};
  EXPECT_DOUBLE_EQ(w.at(0), 1e-5);
  EXPECT_DOUBLE_EQ(w.at(50), 1e-5 + 0.5 * (1e-3 - 1e-5));
  EXPECT_DOUBLE_EQ(w.at(100), 1e-3);
  EXPECT_DOUBLE_EQ(w.at(5000), 1e-3);
}

// Parameters with random values and gradients; p1 has no decay, p2 no gradient.
std::vector<Parameter> make_params(Generator& g) {
  std::vector<Parameter> ps;
  ps.push_back({"w", Variable(Tensor::randn({7, 5}, DType::f32, g), true, "w"), true});
  ps.push_back({"b", Variable(Tensor::randn({5}, DType::f32, g), true, "b"), false});
  ps.push_back({"frozen", Variable(Tensor::randn({3}, DType::f32, g), true, "frozen"), true});
  return ps;
}

TEST(AdamW, MatchesFloat64Reference) {
  Generator g(11);
  std::vector<Parameter> ps = make_params(g);
  const AdamWOptions opt{0.1, 0.9, 0.95, 1e-8};
  AdamW adam(ps, opt);

  // Reference state in f64.
  std::vector<std::vector<double>> p, m, v;
  for (auto& q : ps) {
    p.push_back(q.var.tensor().to_vector<double>());
    m.emplace_back(p.back().size(), 0.0);
    v.emplace_back(p.back().size(), 0.0);
  }
  const std::vector<double> frozen_before = p[2];
  for (int t = 1; t <= 5; ++t) {
    const double lr = 1e-2 * t;
    for (size_t i = 0; i < 2; ++i) ps[i].var.set_grad(Tensor::randn(ps[i].var.shape(), DType::f32, g));
    for (size_t i = 0; i < 2; ++i) {
      const auto gr = ps[i].var.grad().to_vector<double>();
      const double wd = ps[i].decay ? opt.weight_decay : 0.0;
      for (size_t j = 0; j < gr.size(); ++j) {
        p[i][j] *= 1 - lr * wd;
        m[i][j] = opt.beta1 * m[i][j] + (1 - opt.beta1) * gr[j];
        v[i][j] = opt.beta2 * v[i][j] + (1 - opt.beta2) * gr[j] * gr[j];
        const double mh = m[i][j] / (1 - std::pow(opt.beta1, t)), vh = v[i][j] / (1 - std::pow(opt.beta2, t));
        p[i][j] -= lr * mh / (std::sqrt(vh) + opt.eps);
      }
    }
    adam.step(lr);
  }
  EXPECT_EQ(adam.steps_taken(), 5);
  for (size_t i = 0; i < 2; ++i) {
    Tensor ref = Tensor::from_vector(p[i], ps[i].var.shape());
    EXPECT_TRUE(test::close_rel(ps[i].var.tensor(), ref, 1e-5)) << ps[i].name;
    EXPECT_TRUE(test::close_rel(adam.full_state(nullptr).m.at(ps[i].name), Tensor::from_vector(m[i], ps[i].var.shape()), 1e-5));
  }
  EXPECT_EQ(ps[2].var.tensor().to_vector<double>(), frozen_before);  // no gradient: untouched, not even decayed
}

// AdamW's grad_scale is clipping folded into the update: the same parameters and moments as
// clipping the gradients in place and stepping with the clipped ones, bit for bit, on the
// host and (when there is one) on the GPU; and the gradients themselves stay unscaled.
TEST(AdamW, GradScaleEqualsClippingFirst) {
  std::vector<Device> devices{Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda(0));
  for (const Device dev : devices) {
    Generator g(21);
    std::vector<Parameter> a = make_params(g), b;
    for (auto& q : a) {
      q.var = Variable(q.var.tensor().to(dev), true, q.name);
      b.push_back({q.name, Variable(q.var.tensor().clone(), true, q.name), q.decay});
    }
    AdamW oa(a, {0.1, 0.9, 0.95, 1e-8}), ob(b, {0.1, 0.9, 0.95, 1e-8});
    for (int t = 0; t < 3; ++t) {
      for (size_t i = 0; i < 2; ++i) {
        const Tensor grad = Tensor::randn(a[i].var.shape(), DType::f32, g, 0, 3).to(dev);
        a[i].var.set_grad(grad.clone());
        b[i].var.set_grad(grad.clone());
      }
      const double norm = global_grad_norm(a);
      const double factor = clip_factor(0.5, norm);
      ASSERT_LT(factor, 1.0);
      const std::vector<float> grad_before = a[0].var.grad().to_vector<float>();
      oa.step(1e-2, factor);
      EXPECT_EQ(a[0].var.grad().to_vector<float>(), grad_before) << dev.str();
      EXPECT_EQ(clip_grad_norm(b, 0.5, norm), factor);
      ob.step(1e-2);
    }
    for (size_t i = 0; i < a.size(); ++i) {
      const std::string& name = a[i].name;
      EXPECT_EQ(a[i].var.tensor().to_vector<float>(), b[i].var.tensor().to_vector<float>()) << dev.str() << name;
      EXPECT_EQ(oa.full_state(nullptr).v.at(name).to_vector<float>(), ob.full_state(nullptr).v.at(name).to_vector<float>())
          << dev.str() << name;
    }
  }
  EXPECT_EQ(clip_factor(1.0, 0.5), 1.0);
  EXPECT_EQ(clip_factor(0.0, 5.0), 1.0);  // clipping off
  EXPECT_NEAR(clip_factor(1.0, 4.0), 0.25, 1e-7);
}

TEST(AdamW, StateRoundTripContinuesIdentically) {
  Generator g(5);
  std::vector<Parameter> a = make_params(g);
  std::vector<Parameter> b;
  for (auto& q : a) b.push_back({q.name, Variable(q.var.tensor().clone(), true, q.name), q.decay});
  AdamW oa(a, {0.1, 0.9, 0.95, 1e-8});
  Generator gg(9);
  std::vector<Tensor> grads;
  for (int i = 0; i < 6; ++i) grads.push_back(Tensor::randn({7, 5}, DType::f32, gg));
  for (int t = 0; t < 3; ++t) {
    a[0].var.set_grad(grads[t]);
    oa.step(1e-2);
  }
  // b gets a's parameters and optimizer state after 3 steps, then both take 3 more.
  for (size_t i = 0; i < a.size(); ++i) b[i].var.tensor().copy_(a[i].var.tensor());
  AdamW ob(b, {0.1, 0.9, 0.95, 1e-8});
  const AdamW::FullState saved = oa.full_state(nullptr);
  ob.load_state(oa.steps_taken(), saved.m, saved.v);
  for (int t = 3; t < 6; ++t) {
    a[0].var.set_grad(grads[t]);
    b[0].var.set_grad(grads[t]);
    oa.step(1e-2);
    ob.step(1e-2);
  }
  EXPECT_EQ(a[0].var.tensor().to_vector<float>(), b[0].var.tensor().to_vector<float>());

  std::map<std::string, Tensor> wrong = saved.m;
  wrong["w"] = Tensor::zeros({5, 7}, DType::f32);
  EXPECT_THROW(ob.load_state(1, wrong, saved.v), Error);
}

TEST(GradClip, GlobalNormAndClipping) {
  Generator g(3);
  std::vector<Parameter> ps = make_params(g);
  double ref = 0;
  for (size_t i = 0; i < 2; ++i) {
    ps[i].var.set_grad(Tensor::randn(ps[i].var.shape(), DType::f32, g, 0, 2));
    for (double x : ps[i].var.grad().to_vector<double>()) ref += x * x;
  }
  ref = std::sqrt(ref);
  const double norm = global_grad_norm(ps);
  EXPECT_NEAR(norm, ref, 1e-12 * ref);

  EXPECT_EQ(clip_grad_norm(ps, 2 * norm, norm), 1.0);  // below the threshold: untouched
  EXPECT_NEAR(global_grad_norm(ps), ref, 1e-12 * ref);
  const double f = clip_grad_norm(ps, 1.0, norm);
  EXPECT_NEAR(f, 1.0 / norm, 1e-5);
  EXPECT_NEAR(global_grad_norm(ps), 1.0, 1e-5);

  ps[1].var.set_grad(Tensor::full({5}, NAN, DType::f32));
  EXPECT_TRUE(std::isnan(global_grad_norm(ps)));
}

TEST(GradClip, SharedGradientBufferScaledOnce) {
  // The autograd engine may give two leaves the same gradient buffer; clipping must not
  // scale it twice through the alias.
  Generator g(4);
  Tensor shared = Tensor::randn({4}, DType::f32, g);
  const auto before = shared.to_vector<double>();
  std::vector<Parameter> ps;
  ps.push_back({"a", Variable(Tensor::zeros({4}, DType::f32), true), false});
  ps.push_back({"b", Variable(Tensor::zeros({4}, DType::f32), true), false});
  ps[0].var.set_grad(shared);
  ps[1].var.set_grad(shared);
  const double norm = global_grad_norm(ps);
  clip_grad_norm(ps, norm / 2, norm);
  for (auto& p : ps) {
    const auto after = p.var.grad().to_vector<double>();
    for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(after[i], before[i] / 2, 1e-6);
  }
}

// The device's multi-tensor sum of squares (trainers/grad_clip_cuda.cu): more tensors than
// one launch takes (128), empty ones, and sizes around its 4096-element chunk, against the
// same gradients on the host.
TEST(GradClip, CudaNormOverManyTensorsMatchesTheHost) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  Generator g(5);
  std::vector<Parameter> gpu, cpu;
  const int64_t sizes[] = {0, 1, 4095, 4096, 4097, 9000, 33};
  for (int i = 0; i < 300; ++i) {
    const int64_t n = sizes[i % 7];
    const Tensor grad = Tensor::randn({n}, DType::f32, g, 0, 1 + i % 3);
    const std::string name = "p" + std::to_string(i);
    gpu.push_back({name, Variable(Tensor::zeros({n}, DType::f32, Device::cuda(0)), true, name), true});
    gpu.back().var.set_grad(grad.to(Device::cuda(0)));
    cpu.push_back({name, Variable(Tensor::zeros({n}, DType::f32), true, name), true});
    cpu.back().var.set_grad(grad);
  }
  const double host = global_grad_norm(cpu), device = global_grad_norm(gpu);
  EXPECT_GT(host, 0);
  EXPECT_NEAR(device, host, 1e-12 * host);
  EXPECT_EQ(global_grad_norm(gpu), device);  // the same order every run
}

}  // namespace
}  // namespace zt
