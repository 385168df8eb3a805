/* Fuzzes the CSV reader: any bytes must give a table or an error, never a
 * crash, a leak or undefined behaviour. */
#include "fuzz_common.h"
#include "nabla_train.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = input_file(".csv", data, size);
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = "target";
    o.drop_bad_rows = size % 2;
    o.dtype = size % 3 ? NB_F32 : NB_F64;
    nb_dataset d;
    if (nb_csv_read(path, &o, &d) == NB_OK) {
        /* What was read is consistent with what it says it is. */
        if (nb_tensor_size(d.X) != d.rows * d.features || nb_tensor_size(d.y) != d.rows) abort();
        if (strcmp(d.target_name, "target")) abort();
    }
    nb_dataset_free(&d);
    return 0;
}
