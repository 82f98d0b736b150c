#include "trainers/data/brown_corpus.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "tests/trainers/data/data_test_util.h"

namespace zt::data {
namespace {

TEST(BrownCorpus, StripsTagsAndRestoresPunctuation) {
  const std::string tagged =
      "\n\n\tThe/at jury/nn said/vbd ``/`` it's/pps+bez fine/jj ''/'' ,/, and/cc 1-1/2/cd (/( more/ap )/) ./.\n"
      "It/pps didn't/dod* end/vb ;/. was/bedz it/pps ?/.\n"
      "\n\n"
      "Merger/nn-hl proposed/vbn-hl \n"
      "However/wrb ,/, no/at ./.\n"
      "\n\n\tThe/at Jones'/np$ house/nn ./.\n";
  EXPECT_EQ(brown_to_text(tagged),
            "The jury said \"it's fine\", and 1-1/2 (more). It didn't end; was it?\n\n"
            "Merger proposed\nHowever, no.\n\n"
            "The Jones' house.");
}

TEST(BrownCorpus, EmptyAndBlankInputs) {
  EXPECT_EQ(brown_to_text(""), "");
  EXPECT_EQ(brown_to_text("\n\n\t\n  \n"), "");
}

TEST(BrownCorpus, DocumentNames) {
  EXPECT_TRUE(is_brown_document_name("ca01"));
  EXPECT_TRUE(is_brown_document_name("cr09"));
  EXPECT_FALSE(is_brown_document_name("cs01"));
  EXPECT_FALSE(is_brown_document_name("README"));
  EXPECT_FALSE(is_brown_document_name("cats.txt"));
  EXPECT_FALSE(is_brown_document_name("ca1"));
}

TEST(BrownCorpus, RealCorpusFileBecomesPlainText) {
  const std::string path = test::data_dir() + "/brown/raw/ca01";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " absent (run tools/fetch_data.sh)";
  const std::string text = brown_to_text(test::read_file(path));
  EXPECT_EQ(text.rfind("The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
                       "election produced \"no evidence\" that any irregularities took place.\n\n",
                       0),
            0u)
      << text.substr(0, 300);
  EXPECT_EQ(text.find("/at"), std::string::npos);
  EXPECT_EQ(text.find("/nn"), std::string::npos);
  EXPECT_EQ(text.find("``"), std::string::npos);
  EXPECT_EQ(text.find('\t'), std::string::npos);
  EXPECT_GT(text.size(), 10000u);
}

}  // namespace
}  // namespace zt::data
