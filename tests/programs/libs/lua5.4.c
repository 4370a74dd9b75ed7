/* Lua: run chunks in an embedded interpreter (emcc_trio/testing/libraries.py). */
#include <stdio.h>
#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

static int run(lua_State *L, const char *chunk) {
    if (luaL_dostring(L, chunk) != LUA_OK) {
        printf("error: %s\n", lua_tostring(L, -1));
        return 1;
    }
    printf("%s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
}

int main(void) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    int failed = run(L, "return _VERSION")
        || run(L, "return 6*7")
        || run(L, "return string.rep('ab', 3) .. string.upper('lua') .. #'hello'")
        || run(L, "return string.format('%5.2f|%d', math.pi, 2^10 // 1)")
        || run(L, "local t = {} for w in ('one two three'):gmatch('%a+') do t[#t+1] = w:reverse() end"
                  " table.sort(t) return table.concat(t, ',')")
        || run(L, "local function fib(n) if n < 2 then return n end return fib(n-1) + fib(n-2) end"
                  " return fib(20)");
    lua_close(L);
    return failed;
}
