// libFuzzer target: the regex compiler of the grammar engine (plus a few matcher steps).
#include "grammar_fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_one(GRAMMAR_REGEX, data, size); }
