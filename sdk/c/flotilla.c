#define FLOTILLA_IMPLEMENTATION
#include "flotilla.h"
