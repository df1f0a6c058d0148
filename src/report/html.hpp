#pragma once
// Small helpers for writing HTML and SVG text by hand.
#include <string>
#include <string_view>

namespace gppf::report {

// Escapes & < > " ' so any text read from a run directory is safe in element text and attribute values.
std::string escape_html(std::string_view text);
// printf("%.*f") without the trailing noise; "nan" / "inf" for non-finite values.
std::string fixed(double v, int decimals);
// A short human number for tick labels and tables: 0.00123 -> "0.00123", 12345 -> "12345", 1.5e-07 -> "1.5e-07".
std::string short_number(double v);

}  // namespace gppf::report
