#include "csv.h"
typedef int scim_csv_placeholder;
