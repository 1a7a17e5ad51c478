// Classification metrics against hand-computed values (scikit-learn's
// f1_score conventions: binary F1 of class 1, macro F1, zero_division=0).
#include "nn/metrics.h"

#include "core/error.h"
#include "gtest/gtest.h"

namespace quanta::nn {
namespace {

Tensor Ids(std::vector<int64_t> v) { return Tensor::FromVector<int64_t>(v, {static_cast<int64_t>(v.size())}); }

TEST(Metrics, BinaryF1IsClassOnes) {
  // y:    1 1 1 0 0 0 0 1
  // pred: 1 0 1 1 0 0 0 1   tp(1) = 3, fp(1) = 1, fn(1) = 1
  ClassificationMetrics m = Classify(Ids({1, 0, 1, 1, 0, 0, 0, 1}), Ids({1, 1, 1, 0, 0, 0, 0, 1}), 2);
  EXPECT_EQ(m.count, 8);
  EXPECT_DOUBLE_EQ(m.accuracy, 6.0 / 8);
  EXPECT_EQ(m.confusion[1][0], 1);  // a 1 predicted as 0
  EXPECT_EQ(m.confusion[0][1], 1);
  EXPECT_DOUBLE_EQ(m.precision[1], 0.75);
  EXPECT_DOUBLE_EQ(m.recall[1], 0.75);
  EXPECT_DOUBLE_EQ(m.f1(), 0.75);
  EXPECT_DOUBLE_EQ(m.macro_f1, 0.75);  // class 0: P = R = 3/4 too
}

TEST(Metrics, MacroF1WithAnEmptyClass) {
  // 3 classes; class 2 is never predicted nor present: its F1 is 0 (zero_division=0).
  // y:    0 0 1 1 1    pred: 0 1 1 1 0
  // class 0: P = 1/2, R = 1/2, F1 = 1/2; class 1: P = 2/3, R = 2/3, F1 = 2/3.
  ClassificationMetrics m = Classify(Ids({0, 1, 1, 1, 0}), Ids({0, 0, 1, 1, 1}), 3);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.6);
  EXPECT_DOUBLE_EQ(m.f1_per_class[0], 0.5);
  EXPECT_NEAR(m.f1_per_class[1], 2.0 / 3, 1e-12);
  EXPECT_DOUBLE_EQ(m.f1_per_class[2], 0.0);
  EXPECT_NEAR(m.macro_f1, (0.5 + 2.0 / 3) / 3, 1e-12);
  EXPECT_NEAR(m.f1(), m.macro_f1, 0);
}

TEST(Metrics, BadInputNamesTheProblem) {
  try {
    Classify(Ids({0, 1}), Ids({0}), 2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Classify: predictions"), std::string::npos) << e.what();
  }
  try {
    Classify(Ids({0, 5}), Ids({0, 1}), 2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prediction 5, outside [0, 2)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace quanta::nn
