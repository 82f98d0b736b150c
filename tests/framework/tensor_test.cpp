#include <gtest/gtest.h>

#include <cmath>

#include "framework/tensor.h"
#include "tests/support/check.h"

namespace zt {
namespace {

TEST(Tensor, FactoriesShapeAndStrides) {
  Tensor t = Tensor::zeros({2, 3, 4}, DType::f32);
  EXPECT_EQ(t.dim(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u) << "host storage must be SIMD aligned";
  for (float v : t.to_vector<float>()) EXPECT_EQ(v, 0.0f);
}

TEST(Tensor, ViewSharesStorageAndReshapeCopiesWhenStrided) {
  Tensor t = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor v = t.view({3, -1});
  EXPECT_EQ(v.shape(), (Shape{3, 2}));
  EXPECT_TRUE(v.shares_storage(t));
  v.data<float>()[0] = 42;
  EXPECT_EQ(t.to_vector<float>()[0], 42);

  Tensor tr = t.transpose(0, 1);  // [3, 2] strided view
  EXPECT_FALSE(tr.is_contiguous());
  EXPECT_TRUE(tr.shares_storage(t));
  EXPECT_EQ(tr.to_vector<float>(), (std::vector<float>{42, 3, 1, 4, 2, 5}));
  EXPECT_THROW(tr.view({6}), Error);
  Tensor r = tr.reshape({6});
  EXPECT_FALSE(r.shares_storage(t));
  EXPECT_EQ(r.to_vector<float>(), (std::vector<float>{42, 3, 1, 4, 2, 5}));
}

TEST(Tensor, SliceAndSelect) {
  Tensor t = Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  Tensor s = t.slice(1, 1, 3);
  EXPECT_EQ(s.shape(), (Shape{3, 2}));
  EXPECT_EQ(s.to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 5, 6, 9, 10}));
  EXPECT_EQ(t.select(0, 2).to_vector<int64_t>(), (std::vector<int64_t>{8, 9, 10, 11}));
  s.fill_(-1);  // writes through the view
  EXPECT_EQ(t.to_vector<int64_t>()[1], -1);
  EXPECT_EQ(t.to_vector<int64_t>()[0], 0);
  EXPECT_THROW(t.slice(1, 2, 5), Error);
  EXPECT_THROW(t.select(2, 0), Error);
}

TEST(Tensor, DtypeConversionRoundsBf16ToNearestEven) {
  Tensor t = Tensor::from_vector<double>({1.0, 1.00390625, 1.01171875, -2.5, 1e-3}, {5});
  std::vector<float> b = t.to(DType::bf16).to_vector<float>();
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], 1.0f);          // halfway, rounds to even (1.0)
  EXPECT_EQ(b[2], 1.015625f);     // halfway, rounds to even (1.015625)
  EXPECT_EQ(b[3], -2.5f);
  EXPECT_NEAR(b[4], 1e-3, 1e-5);
  EXPECT_EQ(Tensor::from_vector<int32_t>({7}, {1}).to(DType::f64).item(), 7.0);
}

TEST(Tensor, SeededRandomIsReproducible) {
  Generator a(7), b(7), c(8);
  Tensor x = Tensor::randn({1000}, DType::f64, a), y = Tensor::randn({1000}, DType::f64, b),
         z = Tensor::randn({1000}, DType::f64, c);
  EXPECT_EQ(x.to_vector<double>(), y.to_vector<double>());
  EXPECT_NE(x.to_vector<double>(), z.to_vector<double>());
  double mean = 0, var = 0;
  for (double v : x.to_vector<double>()) mean += v / 1000;
  for (double v : x.to_vector<double>()) var += (v - mean) * (v - mean) / 1000;
  EXPECT_NEAR(mean, 0, 0.15);
  EXPECT_NEAR(var, 1, 0.2);
  for (double v : Tensor::rand({1000}, DType::f64, a, 2, 3).to_vector<double>()) {
    EXPECT_GE(v, 2);
    EXPECT_LT(v, 3);
  }
}

TEST(Tensor, AddScaleAndItem) {
  Tensor a = Tensor::from_vector<float>({1, 2, 3}, {3});
  a.add_(Tensor::from_vector<float>({1, 1, 1}, {3}), 2.0);
  a.scale_(0.5);
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{1.5, 2, 2.5}));
  EXPECT_THROW(a.add_(Tensor::zeros({4}, DType::f32)), Error);
  EXPECT_THROW(a.item(), Error);
  EXPECT_EQ(Tensor::scalar(3.5, DType::f32).item(), 3.5);
}

TEST(Tensor, ErrorsNameShapesAndDtypes) {
  Tensor a = Tensor::zeros({2, 3}, DType::f32);
  try {
    a.copy_(Tensor::zeros({3, 2}, DType::f32));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[3, 2]"), std::string::npos) << e.what();
  }
  try {
    a.data<double>();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f32"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("f64"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_dtype("float16"), Error);
  EXPECT_THROW(parse_device("tpu"), Error);
}

TEST(Tensor, PrintsValues) {
  std::string s = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2}).str();
  EXPECT_NE(s.find("[[1, 2], [3, 4]]"), std::string::npos) << s;
  EXPECT_NE(s.find("f32"), std::string::npos);
}

TEST(Tensor, CudaRoundTripSkipsWithoutGpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  Generator g(1);
  Tensor h = Tensor::randn({5, 7}, DType::f32, g);
  Tensor d = h.to(Device::cuda());
  EXPECT_TRUE(d.device().is_cuda());
  Tensor dt = d.transpose(0, 1).contiguous();  // strided copy on the device
  EXPECT_EQ(dt.to(Device::cpu()).to_vector<float>(), h.transpose(0, 1).contiguous().to_vector<float>());
  EXPECT_EQ(d.to(DType::f64).to(Device::cpu()).to_vector<double>(), h.to(DType::f64).to_vector<double>());
}

}  // namespace
}  // namespace zt
