#ifndef SCIM_CSV_H
#define SCIM_CSV_H
#endif
