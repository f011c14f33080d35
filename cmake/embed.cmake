# sdflow_embed(OUTPUT SYMBOL FILES...): generate a C file with a table of the given files'
# contents, terminated by a {NULL} entry:
#   const sd_embedded_file SYMBOL[] = { {"name", bytes, size}, ..., {0} };
# The name is the file's base name. Regenerated whenever an input changes.
function(sdflow_embed output symbol)
  set(files ${ARGN})
  string(REPLACE ";" "|" files_arg "${files}")
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${output} -DSYMBOL=${symbol} "-DFILES=${files_arg}"
            -P ${CMAKE_SOURCE_DIR}/cmake/embed_run.cmake
    DEPENDS ${files} ${CMAKE_SOURCE_DIR}/cmake/embed_run.cmake
    COMMENT "Embedding ${symbol}"
    VERBATIM)
endfunction()
