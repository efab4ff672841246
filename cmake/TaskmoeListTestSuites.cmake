# Run as a script (cmake -P) after a test executable is linked (TaskmoeTests.cmake): lists
# its GoogleTest suites and writes SUITES_FILE, one ctest test per suite.
#   TEST_TARGET      the executable's target name (the tests are named <target>:<suite>)
#   TEST_EXECUTABLE  its path
#   SUITES_FILE      the file of add_test() calls to write
#   CASE_TIMEOUT     seconds allowed per case (0: ctest's default per suite)
execute_process(
  COMMAND "${TEST_EXECUTABLE}" --gtest_list_tests
  OUTPUT_VARIABLE listing
  ERROR_VARIABLE errors
  RESULT_VARIABLE result
  TIMEOUT 60)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "${TEST_TARGET} --gtest_list_tests failed (${result}):\n${listing}${errors}")
endif()

# The listing: a suite's line ("Suite." or "Prefix/Suite/0.  # TypeParam = ...") followed by
# its cases, each indented. Other lines (gtest_main's greeting) are neither.
# Brackets (in parameter values) would unbalance CMake's list splitting; suite names have none.
string(REPLACE ";" "," listing "${listing}")
string(REPLACE "[" "(" listing "${listing}")
string(REPLACE "]" ")" listing "${listing}")
string(REPLACE "\n" ";" lines "${listing}")
set(suites "")
set(current "")
foreach(line IN LISTS lines)
  if(line MATCHES "^([^ #][^ ]*)\\.( .*)?$")
    set(current "${CMAKE_MATCH_1}")
    list(APPEND suites "${current}")
    set(cases_${current} 0)
  elseif(NOT current STREQUAL "" AND line MATCHES "^  [^ ]")
    math(EXPR cases_${current} "${cases_${current}} + 1")
  endif()
endforeach()
if(NOT suites)
  message(FATAL_ERROR "${TEST_TARGET}: no GoogleTest suites in its --gtest_list_tests output")
endif()

set(content "# Written by TaskmoeListTestSuites.cmake from ${TEST_TARGET} --gtest_list_tests.\n")
foreach(suite IN LISTS suites)
  set(cases ${cases_${suite}})
  # Named after the executable too: two executables may have suites of one name (Utf8).
  set(name "${TEST_TARGET}:${suite}")
  # COST: ctest starts the suites with most cases first (before it has measured any), so the
  # long ones do not end up alone at the end of a parallel run.
  string(APPEND content
         "add_test([=[${name}]=] \"${TEST_EXECUTABLE}\" [=[--gtest_filter=${suite}.*]=])\n"
         "set_tests_properties([=[${name}]=] PROPERTIES COST ${cases}")
  if(CASE_TIMEOUT GREATER 0)
    math(EXPR timeout "${CASE_TIMEOUT} * ${cases}")
    string(APPEND content " TIMEOUT ${timeout}")
  endif()
  string(APPEND content ")\n")
endforeach()
file(WRITE "${SUITES_FILE}" "${content}")
