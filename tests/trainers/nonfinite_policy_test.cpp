// The non-finite policy: stop at once, or skip within the consecutive and total limits,
// and count on across a resume.
#include "trainers/nonfinite_policy.h"

#include <gtest/gtest.h>

namespace zt {
namespace {

using Action = NonFinitePolicy::Action;

TEST(NonFinitePolicy, StopModeStopsAtTheFirstNonFiniteStep) {
  NonFinitePolicy p("stop", 5, 20);
  EXPECT_EQ(p.on_step(true).action, Action::update);
  const auto d = p.on_step(false);
  EXPECT_EQ(d.action, Action::stop);
  EXPECT_NE(d.reason.find("train.on_nonfinite=skip"), std::string::npos) << d.reason;
}

TEST(NonFinitePolicy, SkipStopsPastTheConsecutiveLimit) {
  NonFinitePolicy p("skip", 3, 20);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(p.on_step(false).action, Action::skip) << i;
  EXPECT_FALSE(p.may_checkpoint());
  const auto d = p.on_step(false);
  EXPECT_EQ(d.action, Action::stop);
  EXPECT_NE(d.reason.find("4 in a row (train.max_skipped_consecutive = 3)"), std::string::npos) << d.reason;
  EXPECT_NE(d.reason.find("without checkpointing"), std::string::npos) << d.reason;
}

TEST(NonFinitePolicy, SkipStopsPastTheTotalLimitAndAFiniteStepResetsTheStreak) {
  NonFinitePolicy p("skip", 2, 4);
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(p.on_step(false).action, Action::skip);
    EXPECT_EQ(p.on_step(false).action, Action::skip);
    EXPECT_EQ(p.on_step(true).action, Action::update);  // streak over
    EXPECT_TRUE(p.may_checkpoint());
  }
  EXPECT_EQ(p.total(), 4);
  EXPECT_EQ(p.consecutive(), 0);
  const auto d = p.on_step(false);  // the fifth in all
  EXPECT_EQ(d.action, Action::stop);
  EXPECT_NE(d.reason.find("5 in this run (train.max_skipped_total = 4)"), std::string::npos) << d.reason;
}

TEST(NonFinitePolicy, CountsSurviveAResume) {
  NonFinitePolicy a("skip", 3, 20);
  a.on_step(false);
  a.on_step(false);
  NonFinitePolicy b("skip", 3, 20);
  b.restore(a.state());
  EXPECT_EQ(b.consecutive(), 2);
  EXPECT_EQ(b.on_step(false).action, Action::skip);
  EXPECT_EQ(b.on_step(false).action, Action::stop);
  NonFinitePolicy c("skip", 3, 20);
  c.restore(nlohmann::json());  // a checkpoint without the state: zero counts
  EXPECT_EQ(c.total(), 0);
}

}  // namespace
}  // namespace zt
