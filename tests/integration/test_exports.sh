#!/usr/bin/env bash
# libdtrain.so exports exactly the functions that include/dtrain/*.h declare, each marked DTR_API. A
# name the headers do not declare is an internal one leaking out (a program could link against it, and
# every rename would break that program); a declared function that is missing, or declared without
# DTR_API, is an API hole. Then a C++ program includes every public header and links against the library.
# ctest-labels: install
set -euo pipefail
lib=$DTRAIN_BUILD/lib/libdtrain.so
headers=$DTRAIN_SRC/include/dtrain
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -e "$lib" ] || { echo "FAIL: no $lib (build the libdtrain target)"; exit 1; }

# The declared functions, from the headers' text: comments, preprocessor lines and the extern "C" blocks
# go, then what remains at file level (outside braces) is split into declarations at each ';'. A
# declaration that is not a typedef and names dtr_xxx( declares the function dtr_xxx. Output lines:
# "api NAME" when DTR_API marks it, "unmarked NAME file" when it does not.
python3 - "$headers"/*.h >"$tmp/declared" <<'EOF'
import re, sys
for path in sys.argv[1:]:
    text = re.sub(r'/\*.*?\*/', ' ', open(path).read(), flags=re.S)
    text = re.sub(r'//[^\n]*', ' ', text)
    text = re.sub(r'#ifdef __cplusplus.*?#endif', ' ', text, flags=re.S)
    text = re.sub(r'^\s*#(?:[^\n]*\\\n)*[^\n]*', ' ', text, flags=re.M)
    top, depth = [], 0
    for ch in text:
        if ch == '{':
            depth += 1
        elif ch == '}':
            depth -= 1
        elif depth == 0:
            top.append(ch)
    for decl in ''.join(top).split(';'):
        decl = ' '.join(decl.split())
        m = re.match(r'(.*?)\b(dtr_\w+)\s*\(', decl)
        if not m or re.match(r'(typedef|static)\b', decl):
            continue
        if re.search(r'\bDTR_API\b', m.group(1)):
            print('api', m.group(2))
        else:
            print('unmarked', m.group(2), path)
EOF
awk '$1 == "api" {print $2}' "$tmp/declared" | sort >"$tmp/api"
nm -D --defined-only "$lib" | awk '{print $NF}' | sort >"$tmp/exported"
fail=0
if [ "$(wc -l <"$tmp/api")" -lt 50 ]; then
  echo "FAIL: found only $(wc -l <"$tmp/api") DTR_API functions in $headers: the parser is broken"
  fail=1
fi
if grep -q '^unmarked' "$tmp/declared"; then
  echo "FAIL: declared in include/dtrain/ without DTR_API (hidden in the library):"
  awk '$1 == "unmarked" {print "  " $2 " (" $3 ")"}' "$tmp/declared"
  fail=1
fi
if comm -13 "$tmp/api" "$tmp/exported" | grep -q .; then
  echo "FAIL: $lib exports names that include/dtrain/ does not declare (make them static, or dtr__ and hidden):"
  comm -13 "$tmp/api" "$tmp/exported" | sed 's/^/  /'
  fail=1
fi
if comm -23 "$tmp/api" "$tmp/exported" | grep -q .; then
  echo "FAIL: declared with DTR_API but not exported by $lib:"
  comm -23 "$tmp/api" "$tmp/exported" | sed 's/^/  /'
  fail=1
fi
[ "$fail" -eq 0 ] || exit 1

# C++ callers: every header compiles as C++, and the extern "C" names link against the library.
{
  for h in "$headers"/*.h; do echo "#include <dtrain/$(basename "$h")>"; done
  echo '#include <cstdio>'
  echo 'int main() { std::printf("%s %s\n", dtr_version(), dtr_strerror(DTR_OK)); return 0; }'
} >"$tmp/cxx_caller.cc"
c++ -Wall -Wextra -Werror -I"$DTRAIN_SRC/include" -o "$tmp/cxx_caller" "$tmp/cxx_caller.cc" -L"$(dirname "$lib")" \
  -ldtrain
# An ASan or TSan library runs only in a program that loads the sanitizer first: linking is the check there.
if ! nm -D --undefined-only "$lib" | grep -q '__[at]san_init'; then
  LD_LIBRARY_PATH="$(dirname "$lib")" "$tmp/cxx_caller" | grep -q '^0\.1\.0 ' || { echo "FAIL: the C++ caller"; exit 1; }
fi
echo "PASS: $(basename "$lib") exports the $(wc -l <"$tmp/api") functions include/dtrain/ declares and nothing else;" \
  "a C++ program builds against the headers"
