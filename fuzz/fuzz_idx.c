/* Fuzzes the IDX reader, plain and gzip-compressed (zlib reads both; inputs
 * that start with gzip's magic bytes take the compressed path). */
#include "fuzz_common.h"
#include "nabla_train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Refuse inputs that announce more than 64 MiB of values, to keep each
     * run short: the reader itself accepts them. */
    if (size >= 4 && data[3] >= 1 && data[3] <= 8 && size >= 4 + 4u * data[3] && data[0] == 0) {
        uint64_t count = 1;
        for (int d = 0; d < data[3]; d++) {
            const uint8_t *b = data + 4 + 4 * d;
            count *= ((uint64_t)b[0] << 24) | ((uint64_t)b[1] << 16) | ((uint64_t)b[2] << 8) | b[3];
            if (count > (1u << 24)) return 0;
        }
    }
    nb_tensor *t = nb_idx_read(input_file(".idx", data, size), NB_F32, 1.0 / 255);
    nb_tensor_free(t);
    return 0;
}
