package manifest

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a byte count written as an integer or a string with a unit:
// "512", "64KiB", "32MiB", "1GiB", or the SI "32MB", "1G".
type Size int64

const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
)

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"k", 1 << 10}, {"B", 1},
}

// ParseSize parses a size with an optional unit (K, M, G alone are
// binary, as in the Linux tools).
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number with an optional unit like 64KiB, 32MiB or 1GiB", s)
	}
	if n < 0 {
		return 0, fmt.Errorf("size %q is negative", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(n * mult), nil
}

func (s *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		// Negative values are kept for Validate, which reports them with
		// every other problem instead of stopping here.
		*s = Size(v)
		return nil
	case string:
		n, err := ParseSize(v)
		*s = n
		return err
	}
	return fmt.Errorf("size: want an integer or a string like \"32MiB\", got %T", v)
}

// MarshalText writes the largest binary unit that divides the size.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s Size) String() string {
	for _, u := range []struct {
		suffix string
		mult   Size
	}{{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s != 0 && s%u.mult == 0 {
			return strconv.FormatInt(int64(s/u.mult), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// CPU is a number of cores, possibly fractional ("0.5" or 0.5).
type CPU float64

func (c *CPU) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		*c = CPU(v)
	case float64:
		*c = CPU(v)
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return fmt.Errorf("cpu %q: want a number of cores like 0.5 or 2", v)
		}
		*c = CPU(f)
	default:
		return fmt.Errorf("cpu: want a number of cores, got %T", v)
	}
	if math.IsNaN(float64(*c)) || math.IsInf(float64(*c), 0) {
		return fmt.Errorf("cpu: want a finite number of cores")
	}
	return nil
}

func (c CPU) MarshalText() ([]byte, error) {
	return []byte(strconv.FormatFloat(float64(c), 'f', -1, 64)), nil
}

// Duration is written as a Go duration string: "10s", "1m30s", "500ms".
type Duration time.Duration

func (d *Duration) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("duration: want a string like \"10s\", got %T", v)
	}
	x, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want a string like \"10s\" or \"1m30s\"", s)
	}
	*d = Duration(x)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Rlimit is a soft and hard limit: `nofile = 1024`, `nofile = "unlimited"`
// or `nofile = { soft = 1024, hard = 4096 }`.
type Rlimit struct {
	Soft, Hard uint64
}

// Unlimited is RLIM_INFINITY.
const Unlimited = math.MaxUint64

func rlimitValue(v any) (uint64, error) {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return 0, fmt.Errorf("negative limit %d", v)
		}
		return uint64(v), nil
	case string:
		if v == "unlimited" || v == "infinity" {
			return Unlimited, nil
		}
		n, err := ParseSize(v)
		return uint64(n), err
	}
	return 0, fmt.Errorf("want an integer or \"unlimited\", got %T", v)
}

func (r *Rlimit) UnmarshalTOML(v any) error {
	if t, ok := v.(map[string]any); ok {
		for k := range t {
			if k != "soft" && k != "hard" {
				return fmt.Errorf("rlimit: unknown key %q (want soft and hard)", k)
			}
		}
		sv, sok := t["soft"]
		hv, hok := t["hard"]
		if !sok || !hok {
			return fmt.Errorf("rlimit: want both soft and hard")
		}
		var err error
		if r.Soft, err = rlimitValue(sv); err != nil {
			return fmt.Errorf("rlimit soft: %w", err)
		}
		if r.Hard, err = rlimitValue(hv); err != nil {
			return fmt.Errorf("rlimit hard: %w", err)
		}
		return nil
	}
	n, err := rlimitValue(v)
	if err != nil {
		return fmt.Errorf("rlimit: %w", err)
	}
	r.Soft, r.Hard = n, n
	return nil
}

func (r Rlimit) MarshalTOML() ([]byte, error) {
	f := func(v uint64) string {
		if v == Unlimited {
			return `"unlimited"`
		}
		return strconv.FormatUint(v, 10)
	}
	return []byte("{ soft = " + f(r.Soft) + ", hard = " + f(r.Hard) + " }"), nil
}
