#!/bin/sh
# A new faaso function: the request body arrives on stdin and what this prints is the response
# body. The request is in the environment too: $Http_Method, $Http_Path, $Http_Query and each
# header as $Http_<Name> ($Http_Content_Type). Exit non-zero for a 500 carrying stderr.
if [ "$Http_Method" = POST ]; then
  exec cat # echo the request body back
fi
name=$(printf '%s' "$Http_Query" | sed -n 's/^.*name=\([^&]*\).*$/\1/p')
printf 'hello %s' "${name:-world}"
